"""Find PostgreSQL (>= 14) server binaries."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

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
    "PostgreSQL server binaries (>= 14) not found: install them "
    "(Debian/Ubuntu: apt install postgresql; Fedora: dnf install postgresql-server; "
    "macOS: brew install postgresql@16), point FLEET_PG_BIN at their bin directory, "
    "or set FLEET_DATABASE_URL to use an existing server"
)


@dataclass(frozen=True)
class PgBinaries:
    bindir: Path
    major: int

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
    explicit: Path | None = None, search_globs: tuple[str, ...] = SEARCH_GLOBS
) -> PgBinaries:
    """FLEET_PG_BIN when given (no fallback: a wrong value is an error), else the search."""
    if explicit is not None:
        major = _major_of(explicit)
        if major is None:
            raise PostgresNotFoundError(
                f"FLEET_PG_BIN={explicit} does not hold runnable {', '.join(REQUIRED)}; "
                "fix it or unset it to search the usual places"
            )
        if major < MIN_MAJOR:
            raise PostgresNotFoundError(
                f"FLEET_PG_BIN={explicit} is PostgreSQL {major}; version {MIN_MAJOR} or newer "
                "is needed"
            )
        return PgBinaries(explicit, major)
    best: PgBinaries | None = None
    for d in candidate_dirs(search_globs):
        major = _major_of(d)
        if major is not None and major >= MIN_MAJOR and (best is None or major > best.major):
            best = PgBinaries(d, major)
    if best is None:
        raise PostgresNotFoundError(INSTALL_HINT)
    return best
