"""The engine → console bridge: bus events become a dirty set of task ids, flushed to the app
as one TasksChanged message every FLUSH_S (many events in a burst cost one table update), and
events the operator must see become a toast and the terminal bell."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from fleet_console.messages import TasksChanged
from fleet_core.events import EventBus, EventType, FleetEvent

if TYPE_CHECKING:
    from textual.app import App
    from textual.message_pump import MessagePump

FLUSH_S = 0.25
# Status changes a console must call attention to.
NEEDS_OPERATOR = {"ready": "ready to merge", "abandoned": "failed for good"}


class Bridge:
    def __init__(self, app: App[None], bus: EventBus, target: MessagePump) -> None:
        """Changes go to `target` (the fleet screen; messages bubble up, never down)."""
        self.app = app
        self.target = target
        self.dirty: set[UUID] = set()
        self.stalled: set[UUID] = set()  # running tasks without a commit for a while
        self._off = bus.subscribe("*", self.on_event)
        self._timer = app.set_interval(FLUSH_S, self.flush, name="bridge-flush")

    def on_event(self, event: FleetEvent) -> None:
        if event.task_id is not None:
            self.dirty.add(event.task_id)
        if event.type is EventType.STATUS_CHANGED:
            if event.task_id is not None:
                self.stalled.discard(event.task_id)
            what = NEEDS_OPERATOR.get(str(event.data.get("to")))
            if what:
                self.alert(event, what, "error" if what == "failed for good" else "information")
        elif event.type is EventType.STALLED:
            if event.task_id is not None:
                self.stalled.add(event.task_id)
            self.alert(event, f"stalled: no commit for {event.data.get('minutes')} min", "warning")

    def alert(self, event: FleetEvent, what: str, severity: str) -> None:
        short = str(event.task_id)[:8] if event.task_id else ""
        description = str(event.data.get("description", ""))[:60]
        self.app.notify(f"{short} {description}", title=what, severity=severity)  # type: ignore[arg-type]
        self.app.bell()

    def flush(self) -> None:
        if self.dirty:
            ids, self.dirty = self.dirty, set()
            self.target.post_message(TasksChanged(ids))

    def close(self) -> None:
        self._off()
        self._timer.stop()
