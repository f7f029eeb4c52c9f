"""Status changes with their events. The engine moves tasks only through `Transitions.move`, so
every change reaches the bus (the console, the API's event stream, the demo's log): a
`status_changed` event for each, plus `failed`, `retrying`, `cancelled`, `completed` where
one applies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fleet_core.db.database import Database, Tenant
from fleet_core.events import EventBus, EventType
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord, TaskUpdate
from fleet_core.registry import TaskRegistry
from fleet_core.why import with_attempts

_SPECIFIC = {
    TaskStatus.FAILED: EventType.FAILED,
    TaskStatus.ABANDONED: EventType.FAILED,  # failed for good
    TaskStatus.RETRYING: EventType.RETRYING,
    TaskStatus.CANCELLED: EventType.CANCELLED,
    TaskStatus.MERGED: EventType.COMPLETED,
}


class Transitions:
    def __init__(self, db: Database, bus: EventBus) -> None:
        self.db = db
        self.bus = bus

    def registry(self, operator_id: str) -> TaskRegistry:
        return TaskRegistry(self.db, Tenant.operator(operator_id))

    async def move(
        self,
        rec: TaskRecord,
        to: TaskStatus,
        *,
        reason: str | None = None,
        update: TaskUpdate | Mapping[str, Any] | None = None,
        audit_detail: Mapping[str, Any] | None = None,
    ) -> TaskRecord:
        """`rec` → `to` if it is still at `rec.version` (else StaleVersionError)."""
        detail = dict(audit_detail or {})
        if reason and "reason" not in detail:
            detail["reason"] = reason
        update = _keeping_attempts(rec, update)
        new = await self.registry(rec.operator_id).transition(
            rec.id, to, expected_version=rec.version, update=update, audit_detail=detail
        )
        await self.announce(rec, new, reason=reason)
        return new

    async def announce(
        self, before: TaskRecord, after: TaskRecord, *, reason: str | None, **extra: Any
    ) -> None:
        """The events of a change made elsewhere (in a transaction of the caller's)."""
        data: dict[str, Any] = {
            "from": before.status.value,
            "to": after.status.value,
            "reason": reason,
            "description": after.description[:100],
            "branch": after.branch,
            **extra,
        }
        if after.status is TaskStatus.ABANDONED:
            data["final"] = True
        op, tid = after.operator_id, after.id
        await self.bus.emit(EventType.STATUS_CHANGED, operator_id=op, task_id=tid, **data)
        specific = _SPECIFIC.get(after.status)
        if specific is not None:
            await self.bus.emit(specific, operator_id=op, task_id=tid, **data)


def _keeping_attempts(
    rec: TaskRecord, update: TaskUpdate | Mapping[str, Any] | None
) -> TaskUpdate | Mapping[str, Any] | None:
    """A new failure context keeps every earlier attempt's cause (`attempts`)."""
    if update is None:
        return None
    if isinstance(update, TaskUpdate):
        if "failure_context" not in update.model_fields_set or update.failure_context is None:
            return update
        ctx = with_attempts(update.failure_context, rec)
        return update.model_copy(update={"failure_context": ctx})
    given = update.get("failure_context")
    if not isinstance(given, Mapping) or given.get("reason") is None:
        return update
    return {**update, "failure_context": with_attempts(given, rec)}
