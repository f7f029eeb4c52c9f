"""The spawn queue table (migration 0002): spawns over an operator's limit wait here, holding no
slot, in the order of their id (assigned under the operator's admission lock). The governor
admits them (`Governor.take_queued`); this module reads and writes the rows."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fleet_core.db.database import Database, Tenant
from fleet_core.models import NewTask, Tier

if TYPE_CHECKING:
    from fleet_core.db.database import Conn


@dataclass(frozen=True)
class Queued:
    entry_id: int
    operator_id: str
    position: int  # 1 = next in line
    created_at: datetime
    existing: bool = False


@dataclass(frozen=True)
class QueueEntry:
    id: int
    operator_id: str
    tier: Tier
    request: dict[str, Any]
    idempotency_key: str | None
    created_at: datetime


def _entry(row: Any) -> QueueEntry:
    return QueueEntry(
        row["id"],
        row["operator_id"],
        Tier(row["tier"]),
        dict(row["request"]),
        row["idempotency_key"],
        row["created_at"],
    )


async def position(conn: Conn, entry_id: int) -> int:
    n = await conn.fetchval(
        """SELECT count(*) FROM fleet_spawn_queue q, fleet_spawn_queue me
            WHERE me.id = $1 AND q.operator_id = me.operator_id AND q.id <= me.id""",
        entry_id,
    )
    return int(n)


async def enqueue(
    conn: Conn,
    operator_id: str,
    tier: Tier,
    task: NewTask,
    request: Mapping[str, Any] | None,
) -> Queued:
    doc = {"task": task.model_dump(mode="json"), **(request or {})}
    row = await conn.fetchrow(
        "INSERT INTO fleet_spawn_queue (operator_id, tier, request, idempotency_key) "
        "VALUES ($1, $2, $3, $4) RETURNING id, created_at",
        operator_id,
        tier.value,
        doc,
        task.idempotency_key,
    )
    assert row is not None
    return Queued(row["id"], operator_id, await position(conn, row["id"]), row["created_at"])


async def by_key(conn: Conn, operator_id: str, key: str) -> Queued | None:
    """The operator's queued spawn with this idempotency key, if any."""
    row = await conn.fetchrow(
        "SELECT * FROM fleet_spawn_queue WHERE operator_id = $1 AND idempotency_key = $2",
        operator_id,
        key,
    )
    if row is None:
        return None
    where = await position(conn, row["id"])
    return Queued(row["id"], operator_id, where, row["created_at"], existing=True)


async def oldest(conn: Conn, operator_id: str) -> QueueEntry | None:
    row = await conn.fetchrow(
        "SELECT * FROM fleet_spawn_queue WHERE operator_id = $1 ORDER BY id LIMIT 1", operator_id
    )
    return None if row is None else _entry(row)


async def entries(db: Database, tenant: Tenant) -> list[QueueEntry]:
    """Queued spawns visible to `tenant`, oldest first."""
    async with db.tx(tenant) as conn:
        rows = await conn.fetch("SELECT * FROM fleet_spawn_queue ORDER BY id")
    return [_entry(r) for r in rows]


async def operators(db: Database) -> list[str]:
    """Operators with queued spawns, the one waiting longest first."""
    async with db.tx(Tenant.admin()) as conn:
        rows = await conn.fetch(
            "SELECT operator_id, min(id) AS first FROM fleet_spawn_queue "
            "GROUP BY operator_id ORDER BY first"
        )
    return [r["operator_id"] for r in rows]
