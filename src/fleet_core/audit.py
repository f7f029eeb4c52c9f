"""The audit trail (INV-016) and the outbox rows that terminal transitions queue (INV-018)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

if TYPE_CHECKING:
    from fleet_core.db.database import Conn
from fleet_core.db.database import Database, QueryClass, Tenant
from fleet_core.lifecycle import TERMINAL_AUDIT_EVENT
from fleet_core.models import TaskRecord


async def record_terminal(
    conn: Conn,
    rec: TaskRecord,
    from_status: str,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Audit row plus outbox event for a task that just became terminal; runs inside the
    transaction of the status change, in one round trip."""
    from fleet_core.notify.record import task_payload

    payload = task_payload(rec, from_status, detail)
    await conn.execute(
        """WITH audit AS (
               INSERT INTO fleet_audit
                   (task_id, operator_id, event_type, from_status, to_status, detail)
               VALUES ($1, $2, $3, $4, $5, $6))
           INSERT INTO fleet_outbox (operator_id, event_type, payload, dedup_key)
           VALUES ($2, $7, $8, $9)""",
        rec.id,
        rec.operator_id,
        TERMINAL_AUDIT_EVENT[rec.status],
        from_status,
        rec.status.value,
        dict(detail or {}),
        f"task.{rec.status.value}",
        payload,
        f"{rec.id}:{rec.status.value}",
    )


async def record_event(
    conn: Conn,
    *,
    operator_id: str,
    event_type: str,
    task_id: UUID | None = None,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """Any other audited event (secrets issued, config changed, ...)."""
    await conn.execute(
        "INSERT INTO fleet_audit (task_id, operator_id, event_type, detail) VALUES ($1,$2,$3,$4)",
        task_id,
        operator_id,
        event_type,
        dict(detail or {}),
    )


async def audit_trail(db: Database, tenant: Tenant, task_id: UUID) -> list[dict[str, Any]]:
    async with db.tx(tenant, QueryClass.LIST) as conn:
        rows = await conn.fetch(
            "SELECT * FROM fleet_audit WHERE task_id = $1 ORDER BY created_at, id", task_id
        )
    return [dict(r) for r in rows]
