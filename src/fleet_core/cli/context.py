"""What a CLI command acts as and against: settings, identity, an open database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from fleet_core.config import Settings
from fleet_core.db.connect import open_database
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import DatabaseError, DeniedError
from fleet_core.models import Tier

ADMIN_TIER = Tier.SOVEREIGN


def local_tenant(settings: Settings, *, all_operators: bool = False) -> Tenant:
    """The CLI acts as the configured local operator; `--all` needs the admin tier."""
    if all_operators:
        if not settings.tier.at_least(ADMIN_TIER):
            raise DeniedError(
                f"--all shows every operator's tasks and needs tier {ADMIN_TIER.value}; "
                f"{settings.operator} is {settings.tier.value}"
            )
        return Tenant.operator(settings.operator, admin=True)
    return Tenant.operator(settings.operator)


def describe(db: Database) -> str:
    if db.mode == "embedded":
        return "embedded"
    return "FLEET_DATABASE_URL"


# What a query meets when the schema is older than this fleet (a verb that only reads does not
# apply pending migrations).
SCHEMA_BEHIND = (
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedFunctionError,
)


@asynccontextmanager
async def opened(settings: Settings, *, read_only: bool = False) -> AsyncIterator[Database]:
    """The database, closed afterwards. `read_only`: no bootstrap or migration check (see
    `open_database`), for verbs that only read."""
    db = await open_database(settings, read_only=read_only)
    try:
        yield db
    except SCHEMA_BEHIND as exc:
        if not read_only:
            raise
        raise DatabaseError(
            f"the database schema is older than this fleet ({exc}): run `fleet db migrate`"
        ) from exc
    finally:
        await db.close()
