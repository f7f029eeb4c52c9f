"""Events that are no status change, queued in the outbox from the engine's bus and monitor:
a stalled agent (`task.stalled`, once per commit it stalls on), a usage-limit pause
(`task.paused`, once per resume time), and the monitor failing `unhealthy_after` cycles in a
row (`monitor.unhealthy`, for every sovereign operator, once per streak)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from fleet_core.db.database import Database, Tenant
from fleet_core.events import EventBus, EventType, FleetEvent
from fleet_core.notify.events import ALL_SOVEREIGNS
from fleet_core.notify.record import queue_event

log = logging.getLogger(__name__)


class EventQueuer:
    def __init__(self, db: Database, host_id: str, unhealthy_after: int = 3) -> None:
        self.db = db
        self.host_id = host_id
        self.unhealthy_after = unhealthy_after
        self.streak = 0
        self.streak_started: datetime | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._undo: list[Any] = []

    def attach(self, bus: EventBus, on_cycle: list[Any] | None = None) -> None:
        self._undo.append(bus.subscribe(EventType.STALLED, self._stalled))
        self._undo.append(bus.subscribe(EventType.PAUSED, self._paused))
        if on_cycle is not None:
            on_cycle.append(self.cycle_done)
            self._undo.append(lambda: on_cycle.remove(self.cycle_done))

    async def detach(self) -> None:
        for undo in self._undo:
            undo()
        self._undo.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _queue(self, operator: str, event_type: str, payload: dict[str, Any],
                     dedup_key: str) -> None:  # fmt: skip
        async with self.db.tx(Tenant.admin()) as conn:
            await queue_event(conn, operator_id=operator, event_type=event_type,
                              payload=payload, dedup_key=dedup_key[:128])  # fmt: skip

    async def _stalled(self, ev: FleetEvent) -> None:
        if ev.operator_id is None or ev.task_id is None:
            return
        minutes = ev.data.get("minutes")
        await self._queue(ev.operator_id, "task.stalled", {
            "task_id": str(ev.task_id), "summary": f"no commit for {minutes} minutes",
        }, f"{ev.task_id}:stalled:{ev.data.get('commit') or minutes}")  # fmt: skip

    async def _paused(self, ev: FleetEvent) -> None:
        if ev.operator_id is None or ev.task_id is None:
            return
        until = ev.data.get("until")
        await self._queue(ev.operator_id, "task.paused", {
            "task_id": str(ev.task_id), "summary": f"usage limit reached; resumes at {until}",
        }, f"{ev.task_id}:paused:{until}")  # fmt: skip

    def cycle_done(self, report: Any) -> None:
        """Monitor listener (sync): count failing cycles; queue once per streak."""
        if not getattr(report, "errors", None):
            self.streak, self.streak_started = 0, None
            return
        self.streak += 1
        if self.streak == 1:
            self.streak_started = datetime.now(UTC)
        if self.streak != self.unhealthy_after or self.streak_started is None:
            return
        since = self.streak_started.isoformat(timespec="seconds")
        payload = {"host_id": self.host_id, "cycles": self.streak,
                   "summary": f"monitor on {self.host_id} failed {self.streak} cycles in a row: "
                              f"{report.errors[-1]}"[:500]}  # fmt: skip
        task = asyncio.get_running_loop().create_task(self._queue(
            ALL_SOVEREIGNS, "monitor.unhealthy", payload,
            f"monitor.unhealthy:{self.host_id}:{since}"))  # fmt: skip
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("could not queue monitor.unhealthy: %s", task.exception())
