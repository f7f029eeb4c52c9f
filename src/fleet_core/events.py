"""The in-process event bus: typed fleet events, handlers by type or wildcard.

Handlers run one after another, type-specific first, then wildcards; a handler that raises is
logged and counted and never stops the others or the publisher. `sinks` is the seam for
publishing beyond the process (NATS through the outbox comes later): each sink gets every
event after the handlers, with the same error isolation.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from uuid import UUID

log = logging.getLogger(__name__)

WILDCARD = "*"


class EventType(StrEnum):
    SPAWNED = "spawned"
    QUEUED = "queued"
    SPAWN_DENIED = "spawn_denied"
    SPAWN_FAILED = "spawn_failed"
    STATUS_CHANGED = "status_changed"
    COMPLETED = "completed"
    FAILED = "failed"
    RETRYING = "retrying"
    CANCELLED = "cancelled"
    STALLED = "stalled"
    PAUSED = "paused"
    DELETED = "deleted"
    CAPACITY_WARNING = "capacity_warning"
    CAPACITY_RESTORED = "capacity_restored"


@dataclass(frozen=True)
class FleetEvent:
    type: EventType
    operator_id: str | None = None
    task_id: UUID | None = None
    data: dict[str, Any] = field(default_factory=dict)
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type.value,
            "operator_id": self.operator_id,
            "task_id": str(self.task_id) if self.task_id else None,
            "data": self.data,
            "at": self.at.isoformat(),
        }


Handler = Callable[[FleetEvent], Awaitable[None] | None]


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = {}
        self.sinks: list[Handler] = []
        self.errors = 0
        self.published = 0

    def subscribe(self, event_type: EventType | str, handler: Handler) -> Callable[[], None]:
        """Call `handler` for events of `event_type` (or every event, with "*"); returns a
        function that unsubscribes it."""
        key = WILDCARD if event_type == WILDCARD else EventType(event_type).value
        self._handlers.setdefault(key, []).append(handler)

        def unsubscribe() -> None:
            handlers = self._handlers.get(key, [])
            if handler in handlers:
                handlers.remove(handler)

        return unsubscribe

    async def publish(self, event: FleetEvent) -> None:
        self.published += 1
        targets = [
            *self._handlers.get(event.type.value, ()),
            *self._handlers.get(WILDCARD, ()),
            *self.sinks,
        ]
        for handler in targets:
            try:
                result = handler(event)
                if inspect.isawaitable(result):
                    await result
            except Exception:
                self.errors += 1
                log.exception("event handler failed", extra={"event": event.type.value})

    async def emit(
        self,
        event_type: EventType,
        *,
        operator_id: str | None = None,
        task_id: UUID | None = None,
        **data: Any,
    ) -> FleetEvent:
        event = FleetEvent(event_type, operator_id, task_id, data)
        await self.publish(event)
        return event
