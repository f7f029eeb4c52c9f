"""Open the engine's database: embedded cluster or FLEET_DATABASE_URL, bootstrapped, migrated."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from fleet_core.config import Settings
from fleet_core.db.bootstrap import (
    DEFAULT_DATABASE,
    OWNER_ROLE,
    bootstrap_embedded,
    ensure_engine_role,
)
from fleet_core.db.database import ENGINE_ROLE, Database
from fleet_core.db.embedded import SUPERUSER, EmbeddedCluster
from fleet_core.errors import DatabaseError

if TYPE_CHECKING:
    from fleet_core.db.migrate import Migration


@dataclass(frozen=True)
class Target:
    """Where the database is: `owner_dsn` runs migrations, `engine_dsn` serves the engine."""

    mode: str
    owner_dsn: str
    engine_dsn: str


def with_user(dsn: str, user: str) -> str:
    """The same server and database as `dsn`, as another role (without its password)."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}@{host}"))


def cluster_for(settings: Settings) -> EmbeddedCluster:
    return EmbeddedCluster(
        settings.data_dir,
        pg_dir=settings.pg_dir,
        pg_bin=settings.pg_bin,
        pg_user=settings.pg_user,
    )


async def resolve_target(settings: Settings, *, database: str = DEFAULT_DATABASE) -> Target:
    """Start (if needed) and bootstrap the embedded cluster, or take FLEET_DATABASE_URL."""
    if settings.database_url:
        owner = settings.database_url
        engine = settings.engine_database_url or with_user(owner, ENGINE_ROLE)
        await _guard(ensure_engine_role(owner), "FLEET_DATABASE_URL")
        return Target("external", owner, engine)
    cluster = cluster_for(settings)
    info = await asyncio.to_thread(cluster.ensure_running)
    # Every role logs in with its password (never trust): give them theirs, then make sure
    # the server asks for them (a cluster of an older fleet trusted its socket until now).
    passwords = await asyncio.to_thread(cluster.passwords, (SUPERUSER, OWNER_ROLE, ENGINE_ROLE))
    await _guard(bootstrap_embedded(info.dsn(), database, passwords), "the embedded cluster")
    await asyncio.to_thread(cluster.require_passwords)
    return Target(
        "embedded",
        info.dsn(OWNER_ROLE, database),
        settings.engine_database_url or info.dsn(ENGINE_ROLE, database),
    )


async def _guard(coro: Awaitable[None], where: str) -> None:
    try:
        await coro
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseError(f"cannot reach {where}: {exc}") from exc


async def migrate(owner_dsn: str) -> list[Migration]:
    from fleet_core.db.migrate import Migrator  # not on the path of verbs that only read

    try:
        conn = await asyncpg.connect(owner_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseError(f"cannot connect as the schema owner: {exc}") from exc
    try:
        return await Migrator(conn).migrate()
    finally:
        await conn.close()


async def open_database(
    settings: Settings, *, database: str = DEFAULT_DATABASE, read_only: bool = False
) -> Database:
    """What every entry point calls: reach the server, apply pending migrations, open the pool.

    `read_only` (verbs that only read: status, show, logs) skips the bootstrap and the
    migration check, and opens a one-connection pool, when the database is already there; the
    first run anywhere still creates it (and a schema left behind shows up as one clear error
    at the first query, see `cli.context.opened`)."""
    if read_only:
        try:
            return await _open_existing(settings, database)
        except DatabaseError as exc:
            # Not there yet: the full path starts the cluster, creates what is missing.
            embedded_down = not settings.database_url and isinstance(exc.__cause__, OSError)
            if not (embedded_down or isinstance(exc.__cause__, NOT_THERE_YET)):
                raise
    target = await resolve_target(settings, database=database)
    await migrate(target.owner_dsn)
    return await Database.connect(target.engine_dsn, owner_dsn=target.owner_dsn, mode=target.mode)


# A database or role that bootstrap has not created yet.
NOT_THERE_YET = (asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError)


async def _open_existing(settings: Settings, database: str) -> Database:
    if settings.database_url:
        owner = settings.database_url
        target = Target(
            "external", owner, settings.engine_database_url or with_user(owner, ENGINE_ROLE)
        )
    else:
        info = cluster_for(settings).info  # not running: the connection fails, see above
        target = Target(
            "embedded",
            info.dsn(OWNER_ROLE, database),
            settings.engine_database_url or info.dsn(ENGINE_ROLE, database),
        )
    return await Database.connect(
        target.engine_dsn, owner_dsn=target.owner_dsn, mode=target.mode, min_size=1
    )
