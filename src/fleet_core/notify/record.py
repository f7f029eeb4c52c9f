"""Queueing an event in the outbox, inside the caller's transaction: the event exists exactly
when the change it reports was committed (never lost, never sent for a rolled-back change).
A repeated dedup key is one row."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet_core.db.database import Conn
    from fleet_core.models import TaskRecord


async def queue_event(
    conn: Conn, *, operator_id: str, event_type: str, payload: Mapping[str, Any], dedup_key: str
) -> None:
    await conn.execute(
        "INSERT INTO fleet_outbox (operator_id, event_type, payload, dedup_key) "
        "VALUES ($1, $2, $3, $4) ON CONFLICT (dedup_key) DO NOTHING",
        operator_id, event_type, dict(payload), dedup_key,
    )  # fmt: skip


def task_payload(
    rec: TaskRecord, from_status: str | None, detail: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """What every task event carries (the terminal ones through audit.record_terminal)."""
    ctx = rec.failure_context or {}
    reason = (detail or {}).get("reason") or ctx.get("reason")
    return {
        "task_id": str(rec.id),
        "operator_id": rec.operator_id,
        "from_status": from_status,
        "to_status": rec.status.value,
        "branch": rec.branch,
        "pr_number": rec.pr_number,
        "retry_count": rec.retry_count,
        "description": rec.description[:100],
        "reason": str(reason)[:200] if reason else None,
        "failure_class": ctx.get("reason") if rec.status.value == "failed" else None,
        "version": rec.version,
    }


async def queue_transition(
    conn: Conn, rec: TaskRecord, from_status: str | None, detail: Mapping[str, Any] | None
) -> None:
    """The event of a non-terminal transition (`task.<status>`), for NATS and the channels
    whose filter asks for it; dedup key `<task>:<status>:<version>`."""
    await queue_event(
        conn,
        operator_id=rec.operator_id,
        event_type=f"task.{rec.status.value}",
        payload=task_payload(rec, from_status, detail),
        dedup_key=f"{rec.id}:{rec.status.value}:{rec.version}",
    )
