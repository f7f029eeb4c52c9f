"""Roles and database the schema needs: an owner for migrations and a restricted engine role."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import asyncpg

from fleet_core.db.database import ENGINE_ROLE
from fleet_core.errors import DatabaseError

OWNER_ROLE = "fleet_owner"
DEFAULT_DATABASE = "fleet"
ENGINE_ROLE_SQL = f"CREATE ROLE {ENGINE_ROLE} LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE"


async def _create_role(conn: asyncpg.Connection, name: str, sql: str) -> None:
    if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", name):
        return
    # A concurrent starter may create it first.
    with contextlib.suppress(asyncpg.DuplicateObjectError, asyncpg.UniqueViolationError):
        await conn.execute(sql)


async def bootstrap_embedded(
    superuser_dsn: str, database: str = DEFAULT_DATABASE, passwords: Mapping[str, str] | None = None
) -> None:
    """As the cluster's superuser: create both roles and the database (owned by the owner),
    and give every role in `passwords` its password when it has no SCRAM one yet (a new
    role, or a cluster made when fleet trusted its socket)."""
    conn = await asyncpg.connect(superuser_dsn, timeout=10)
    try:
        await _create_role(
            conn, OWNER_ROLE, f"CREATE ROLE {OWNER_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE"
        )
        await _create_role(conn, ENGINE_ROLE, ENGINE_ROLE_SQL)
        for role, password in (passwords or {}).items():
            stored = await conn.fetchval(
                "SELECT rolpassword FROM pg_authid WHERE rolname = $1", role
            )
            if not (stored or "").startswith("SCRAM-SHA-256$"):
                literal = "'" + password.replace("'", "''") + "'"
                await conn.execute("SET password_encryption = 'scram-sha-256'")  # this session
                await conn.execute(f'ALTER ROLE "{role}" PASSWORD {literal}')
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database):
            with contextlib.suppress(asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                await conn.execute(f'CREATE DATABASE "{database}" OWNER {OWNER_ROLE}')
    finally:
        await conn.close()


async def ensure_engine_role(owner_dsn: str) -> None:
    """External server: the engine role must exist; create it when the owner may."""
    conn = await asyncpg.connect(owner_dsn, timeout=10)
    try:
        try:
            await _create_role(conn, ENGINE_ROLE, ENGINE_ROLE_SQL)
        except asyncpg.InsufficientPrivilegeError:
            raise DatabaseError(
                f"role {ENGINE_ROLE} does not exist and the FLEET_DATABASE_URL role may not "
                f"create it; as an administrator run: {ENGINE_ROLE_SQL}"
            ) from None
    finally:
        await conn.close()
