"""The router's reputation step, kept for `fleet show`: a spawn whose route passed a model
over ("skipped: claude-opus-4-6 reputation 0.42 < 0.8 over 12 tasks") leaves a `fleet.routed`
audit row on its task, written with the task's row (the governor admits it, at once or from
the queue); `fleet show` prints it as `route: ...`, `fleet show --json` as `route`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fleet_core.audit import record_event
from fleet_core.db.database import Database, QueryClass, Tenant

if TYPE_CHECKING:
    from fleet_core.db.database import Conn

ROUTED = "fleet.routed"


def skipped(request: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The route of a spawn request when it passed a model over, else None."""
    route = (request or {}).get("route")
    if not isinstance(route, Mapping):
        return None
    detail = str(route.get("detail") or "")
    if "skipped: " not in detail:
        return None
    return {"reason": str(route.get("reason") or ""), "detail": detail}


async def record(
    conn: Conn, *, operator_id: str, task_id: UUID, request: Mapping[str, Any] | None
) -> None:
    route = skipped(request)
    if route is not None:
        await record_event(
            conn, operator_id=operator_id, event_type=ROUTED, task_id=task_id, detail=route
        )


async def read(db: Database, tenant: Tenant, task_id: UUID) -> dict[str, str] | None:
    async with db.tx(tenant, QueryClass.LIST) as conn:
        detail = await conn.fetchval(
            "SELECT detail FROM fleet_audit WHERE task_id = $1 AND event_type = $2"
            " ORDER BY created_at DESC, id DESC LIMIT 1",
            task_id,
            ROUTED,
        )
    if not isinstance(detail, Mapping):
        return None
    return {"reason": str(detail.get("reason", "")), "detail": str(detail.get("detail", ""))}
