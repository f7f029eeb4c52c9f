"""What the outbox holds (pending and dead-lettered), the notification record of a task, the
health summary, and redrive: a dead-lettered delivery tried again from attempt one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from fleet_core.db.database import Database, QueryClass, Tenant
from fleet_core.errors import BadInputError

MAX_LIST = 200


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def _event(r: Any) -> dict[str, Any]:
    return {
        "id": str(r["id"]),
        "event": r["event_type"],
        "operator_id": r["operator_id"],
        "dedup_key": r["dedup_key"],
        "task_id": (r["payload"] or {}).get("task_id"),
        "created_at": _iso(r["created_at"]),
        "next_attempt_at": _iso(r["next_attempt_at"]),
        "tries": r["retry_count"],
        "held_by": r["locked_by"],
        "error": r["error"],
    }


def _delivery(r: Any) -> dict[str, Any]:
    return {
        "id": str(r["id"]),
        "event_id": str(r["outbox_id"]) if r["outbox_id"] else None,
        "event": r["event_type"],
        "operator_id": r["operator_id"],
        "task_id": str(r["task_id"]) if r["task_id"] else None,
        "channel": r["channel"],
        "attempts": r["attempts"],
        "last_status": r["last_status"],
        "last_error": r["last_error"],
        "delivered_at": _iso(r["delivered_at"]),
        "dead_at": _iso(r["dead_at"]),
        "next_attempt_at": _iso(r["next_attempt_at"]),
    }


async def outbox_status(db: Database, tenant: Tenant, limit: int = 50) -> dict[str, Any]:
    """Counts, the oldest pending events and the dead-lettered deliveries the tenant sees."""
    limit = max(1, min(limit, MAX_LIST))
    async with db.tx(tenant, QueryClass.LIST) as conn:
        counts = await conn.fetchrow(
            """SELECT count(*) FILTER (WHERE processed_at IS NULL AND dead_at IS NULL) AS pending,
                      count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead,
                      count(*) FILTER (WHERE processed_at IS NOT NULL) AS processed
                 FROM fleet_outbox"""
        )
        pending = await conn.fetch(
            "SELECT * FROM fleet_outbox WHERE processed_at IS NULL AND dead_at IS NULL "
            "ORDER BY created_at LIMIT $1",
            limit,
        )
        dead = await conn.fetch(
            "SELECT * FROM fleet_notifications WHERE dead_at IS NOT NULL "
            "ORDER BY dead_at DESC LIMIT $1",
            limit,
        )
    assert counts is not None
    return {
        "pending": counts["pending"],
        "dead_lettered_events": counts["dead"],
        "processed": counts["processed"],
        "pending_events": [_event(r) for r in pending],
        "dead_letters": [_delivery(r) for r in dead],
    }


async def task_deliveries(db: Database, tenant: Tenant, task_id: UUID) -> list[dict[str, Any]]:
    """A task's notification record: per event and channel."""
    async with db.tx(tenant) as conn:
        rows = await conn.fetch(
            "SELECT * FROM fleet_notifications WHERE task_id = $1 ORDER BY created_at, channel",
            task_id,
        )
    return [_delivery(r) for r in rows]


@dataclass(frozen=True)
class DeliveryHealth:
    pending: int
    failing: int  # deliveries that failed at least once and are waiting for another try
    dead: int
    oldest_pending_s: float | None

    @property
    def ok(self) -> bool:
        return self.failing == 0 and self.dead == 0

    def line(self) -> str:
        if self.ok:
            return f"deliveries: ok ({self.pending} pending)"
        return f"deliveries failing: {self.failing} retrying, {self.dead} dead-lettered"


async def delivery_health(db: Database, tenant: Tenant) -> DeliveryHealth:
    async with db.tx(tenant, QueryClass.LIST) as conn:
        row = await conn.fetchrow(
            """SELECT
                 (SELECT count(*) FROM fleet_outbox
                   WHERE processed_at IS NULL AND dead_at IS NULL) AS pending,
                 (SELECT extract(epoch FROM now() - min(created_at)) FROM fleet_outbox
                   WHERE processed_at IS NULL AND dead_at IS NULL) AS oldest,
                 (SELECT count(*) FROM fleet_notifications
                   WHERE delivered_at IS NULL AND dead_at IS NULL AND attempts > 0) AS failing,
                 (SELECT count(*) FROM fleet_notifications WHERE dead_at IS NOT NULL) AS dead"""
        )
    assert row is not None
    oldest = float(row["oldest"]) if row["oldest"] is not None else None
    return DeliveryHealth(row["pending"], row["failing"], row["dead"], oldest)


async def redrive(db: Database, tenant: Tenant, prefix: str | None = None) -> int:
    """Dead-lettered deliveries (all the tenant sees, or of the events whose id or dedup key
    starts with `prefix`) go back to attempt one; returns how many. Wakes the workers."""
    if prefix is not None and (not prefix or len(prefix) > 128):
        raise BadInputError("id", "give an event id (or its start) or a dedup key")
    like = None
    if prefix is not None:
        like = "".join("\\" + c if c in "\\%_" else c for c in prefix) + "%"
    async with db.tx(tenant) as conn:
        rows = await conn.fetch(
            """UPDATE fleet_notifications n
                  SET attempts = 0, dead_at = NULL, last_error = NULL,
                      next_attempt_at = now()
                 FROM fleet_outbox o
                WHERE n.outbox_id = o.id AND n.dead_at IS NOT NULL
                  AND ($1::text IS NULL OR o.id::text LIKE $1 OR o.dedup_key LIKE $1)
            RETURNING n.outbox_id""",
            like,
        )
        events = sorted({r["outbox_id"] for r in rows})
        if events:
            await conn.execute(
                "UPDATE fleet_outbox SET processed_at = NULL, dead_at = NULL, error = NULL, "
                "next_attempt_at = now() WHERE id = ANY($1::uuid[])",
                events,
            )
            await conn.execute("SELECT pg_notify('fleet_outbox', 'redrive')")
    return len(rows)
