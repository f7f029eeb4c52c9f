"""Plain-SQL migrations: `NNNN_name.sql` with `NNNN_name.down.sql`, checksummed, under a lock."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from fleet_core.errors import MigrationError

LOCK_NAMESPACE = 0x464C54  # "FLT": our advisory-lock namespace
MIGRATION_LOCK_KEY = 1
NAME_RE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
TABLE = "fleet_schema_migrations"


def migrations_dir() -> Path:
    """Packaged copy (wheel) first, else the repository's `migrations/` (editable install)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "migrations", here.parent.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise MigrationError(f"no migrations directory found near {here}")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    up_path: Path
    down_path: Path

    @property
    def up_sql(self) -> str:
        return self.up_path.read_text()

    @property
    def down_sql(self) -> str:
        return self.down_path.read_text()

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.up_path.read_bytes()).hexdigest()

    @property
    def filename(self) -> str:
        return self.up_path.name


@dataclass(frozen=True)
class MigrationState:
    version: int
    name: str
    state: str  # applied | pending | changed | unknown
    applied_at: datetime | None


def discover(directory: Path | None = None) -> list[Migration]:
    directory = directory or migrations_dir()
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        if path.name.endswith(".down.sql"):
            continue
        m = NAME_RE.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: migration files are named NNNN_name.sql")
        down = path.with_name(path.name[: -len(".sql")] + ".down.sql")
        if not down.exists():
            raise MigrationError(f"{path.name} has no down file {down.name}")
        found.append(Migration(int(m.group(1)), m.group(2), path, down))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migrations share a version number in {directory}")
    return found


class Migrator:
    """Applies and reverts migrations on one owner connection."""

    def __init__(self, conn: asyncpg.Connection, migrations: list[Migration] | None = None):
        self.conn = conn
        self.migrations = discover() if migrations is None else migrations

    async def _lock(self) -> None:
        await self.conn.execute(
            "SELECT pg_advisory_lock($1, $2)", LOCK_NAMESPACE, MIGRATION_LOCK_KEY
        )

    async def _unlock(self) -> None:
        await self.conn.execute(
            "SELECT pg_advisory_unlock($1, $2)", LOCK_NAMESPACE, MIGRATION_LOCK_KEY
        )

    async def _ensure_table(self) -> None:
        await self.conn.execute(
            f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                    version    INTEGER PRIMARY KEY,
                    name       TEXT NOT NULL,
                    checksum   TEXT NOT NULL,
                    applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"""
        )

    async def _applied(self) -> dict[int, asyncpg.Record]:
        exists = await self.conn.fetchval("SELECT to_regclass($1) IS NOT NULL", TABLE)
        if not exists:
            return {}
        rows = await self.conn.fetch(f"SELECT * FROM {TABLE} ORDER BY version")
        return {r["version"]: r for r in rows}

    def _check(self, applied: dict[int, asyncpg.Record]) -> None:
        known = {m.version: m for m in self.migrations}
        for version, row in applied.items():
            mig = known.get(version)
            if mig is None:
                raise MigrationError(
                    f"the database has migration {version:04d}_{row['name']}, which this version "
                    "of fleet does not have; upgrade fleet or point it at another database"
                )
            if mig.checksum != row["checksum"]:
                raise MigrationError(
                    f"migration {mig.filename} was changed after it was applied (recorded "
                    f"sha256 {row['checksum'][:12]}, file now {mig.checksum[:12]}); restore the "
                    "file and put the change in a new migration"
                )

    async def status(self) -> list[MigrationState]:
        applied = await self._applied()
        states: list[MigrationState] = []
        known = set()
        for mig in self.migrations:
            known.add(mig.version)
            row = applied.get(mig.version)
            if row is None:
                states.append(MigrationState(mig.version, mig.name, "pending", None))
            else:
                state = "applied" if row["checksum"] == mig.checksum else "changed"
                states.append(MigrationState(mig.version, mig.name, state, row["applied_at"]))
        for version, row in applied.items():
            if version not in known:
                states.append(MigrationState(version, row["name"], "unknown", row["applied_at"]))
        return sorted(states, key=lambda s: s.version)

    async def migrate(self) -> list[Migration]:
        """Apply every pending migration, each in its own transaction; return those applied."""
        await self._lock()
        try:
            await self._ensure_table()
            applied = await self._applied()
            self._check(applied)
            done: list[Migration] = []
            for mig in self.migrations:
                if mig.version in applied:
                    continue
                try:
                    async with self.conn.transaction():
                        await self.conn.execute(mig.up_sql)
                        await self.conn.execute(
                            f"INSERT INTO {TABLE} (version, name, checksum) VALUES ($1, $2, $3)",
                            mig.version,
                            mig.name,
                            mig.checksum,
                        )
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"migration {mig.filename} failed: {exc}") from exc
                done.append(mig)
            return done
        finally:
            await self._unlock()

    async def down(self, steps: int) -> list[Migration]:
        """Revert the newest `steps` applied migrations; return those reverted."""
        if steps < 1:
            raise MigrationError("down needs a number of migrations >= 1")
        await self._lock()
        try:
            applied = await self._applied()
            self._check(applied)
            by_version = {m.version: m for m in self.migrations}
            undone: list[Migration] = []
            for version in sorted(applied, reverse=True)[:steps]:
                mig = by_version[version]
                try:
                    async with self.conn.transaction():
                        await self.conn.execute(mig.down_sql)
                        await self.conn.execute(f"DELETE FROM {TABLE} WHERE version = $1", version)
                except asyncpg.PostgresError as exc:
                    raise MigrationError(f"reverting {mig.filename} failed: {exc}") from exc
                undone.append(mig)
            return undone
        finally:
            await self._unlock()
