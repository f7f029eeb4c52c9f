"""The engine's connection pool and the one helper that opens tenant-scoped transactions."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]

from fleet_core.errors import BadInputError, DatabaseError, UnsafeRoleError
from fleet_core.models import OPERATOR_ID_RE

log = logging.getLogger(__name__)

POOL_MIN = 2
POOL_MAX = 10
CONNECT_TIMEOUT_S = 5.0
ENGINE_ROLE = "fleet_engine"


class QueryClass(Enum):
    """statement_timeout per kind of work, in milliseconds."""

    POINT = 5_000  # single-row reads and writes
    LIST = 15_000  # queries over many rows, counts
    ADMIN = 60_000  # maintenance


@dataclass(frozen=True)
class Tenant:
    """Who a transaction acts for; RLS reads it from app.operator_id / app.is_admin."""

    operator_id: str | None
    is_admin: bool = False

    def __post_init__(self) -> None:
        if self.operator_id is not None and not OPERATOR_ID_RE.match(self.operator_id):
            raise BadInputError(
                "operator",
                f"{self.operator_id!r} is not a valid operator id (1-128 of A-Z a-z "
                "0-9 . _ @ : + -, starting with a letter or digit)",
            )
        if self.operator_id is None and not self.is_admin:
            raise BadInputError("operator", "a tenant needs an operator id or admin rights")

    @classmethod
    def operator(cls, operator_id: str, *, admin: bool = False) -> Tenant:
        return cls(operator_id, admin)

    @classmethod
    def admin(cls) -> Tenant:
        return cls(None, True)


def _literal(value: str) -> str:
    # standard_conforming_strings is on (the default since 9.1): doubling quotes is enough.
    if "\0" in value:
        raise ValueError("NUL in SQL literal")
    return "'" + value.replace("'", "''") + "'"


def tenant_prelude(tenant: Tenant, query_class: QueryClass) -> str:
    """BEGIN plus the transaction-local settings, sent as one simple query (one round trip)."""
    return (
        "BEGIN ISOLATION LEVEL READ COMMITTED; SELECT "
        f"set_config('app.operator_id', {_literal(tenant.operator_id or '')}, true), "
        f"set_config('app.is_admin', {_literal('true' if tenant.is_admin else 'false')}, true), "
        f"set_config('statement_timeout', '{query_class.value}', true)"
    )


async def init_connection(conn: asyncpg.Connection) -> None:
    for typename in ("json", "jsonb"):
        await conn.set_type_codec(
            typename, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def check_engine_role(conn: Conn) -> None:
    """Row-level security binds only a role that is not superuser, lacks BYPASSRLS and owns
    no table (directly or through membership). Refuse to run as anything else."""
    row = await conn.fetchrow(
        """SELECT r.rolname, r.rolsuper, r.rolbypassrls,
                  (SELECT count(*) FROM pg_class c
                    WHERE c.relkind IN ('r', 'p')
                      AND c.relnamespace NOT IN ('pg_catalog'::regnamespace,
                                                 'information_schema'::regnamespace)
                      AND pg_has_role(current_user, c.relowner, 'USAGE')) AS owned
             FROM pg_roles r WHERE r.rolname = current_user"""
    )
    if row is None:
        raise UnsafeRoleError("cannot read the engine role from pg_roles")
    problems = []
    if row["rolsuper"]:
        problems.append("is a superuser")
    if row["rolbypassrls"]:
        problems.append("has BYPASSRLS")
    if row["owned"]:
        problems.append(f"owns {row['owned']} table(s)")
    if problems:
        raise UnsafeRoleError(
            f"the engine's database role {row['rolname']!r} {' and '.join(problems)}, so "
            "row-level security would not bind; connect the engine as a separate role "
            f"(default {ENGINE_ROLE}) with NOSUPERUSER NOBYPASSRLS that owns nothing"
        )


async def reset_connection(conn: Conn) -> None:
    """Pool release hook. Our state is transaction-local (set_config(..., true)) and every
    `tx` ends in COMMIT or ROLLBACK, so the default reset round trip (RESET ALL, UNLISTEN,
    advisory unlock) only costs time; roll back if a transaction was somehow left open."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


class Database:
    """Owns the engine's asyncpg pool. Every query path goes through `tx`."""

    def __init__(self, pool: asyncpg.Pool, *, dsn: str, owner_dsn: str, mode: str) -> None:
        self.pool = pool
        self.dsn = dsn
        self.owner_dsn = owner_dsn
        self.mode = mode  # "embedded" or "external"

    @classmethod
    async def connect(
        cls, dsn: str, *, owner_dsn: str, mode: str, min_size: int = POOL_MIN
    ) -> Database:
        try:
            pool = await asyncpg.create_pool(
                dsn,
                min_size=min_size,
                max_size=POOL_MAX,
                timeout=CONNECT_TIMEOUT_S,
                max_inactive_connection_lifetime=300,
                init=init_connection,
                reset=reset_connection,
                server_settings={"application_name": "fleet-engine"},
            )
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            raise DatabaseError(f"cannot connect the engine to the database: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                await check_engine_role(conn)
        except BaseException:
            await pool.close()
            raise
        return cls(pool, dsn=dsn, owner_dsn=owner_dsn, mode=mode)

    @asynccontextmanager
    async def tx(
        self,
        tenant: Tenant,
        query_class: QueryClass = QueryClass.POINT,
    ) -> AsyncIterator[Conn]:
        """A READ COMMITTED transaction whose RLS context is `tenant`; commits on success."""
        async with self.pool.acquire() as conn:
            await conn.execute(tenant_prelude(tenant, query_class))
            try:
                yield conn
            except BaseException:
                try:
                    await conn.execute("ROLLBACK")
                except Exception:  # the connection is broken: make sure the pool drops it
                    conn.terminate()
                raise
            else:
                await conn.execute("COMMIT")

    async def close(self) -> None:
        await self.pool.close()
        log.info("database pool closed", extra={"mode": self.mode})

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()
