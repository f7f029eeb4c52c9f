"""What a client (a console or server while another process is the engine) sees of the changes
the engine and other processes make: it LISTENs on the channel every transition notifies (the
outbox's, DESIGN §10) and, woken or every `poll_s`, reads the tasks changed since it last
looked; each status it had not seen becomes a `status_changed` event on its own bus, as if its
own engine had made the change (the console's bridge and the API's event stream need nothing
else). Changes this process made itself are on its bus already and are not repeated."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

import asyncpg

from fleet_core.db.database import Database, QueryClass, Tenant
from fleet_core.events import EventBus, EventType, FleetEvent
from fleet_core.tasks import stop_task

log = logging.getLogger(__name__)

CHANNEL = "fleet_outbox"  # a trigger notifies every outbox row: every transition has one
# `updated_at` is its transaction's start: a change that commits later than it began is still
# found when the window reaches this far back (versions keep it from being reported twice).
SLACK = timedelta(seconds=30)


class TaskFollower:
    def __init__(self, db: Database, bus: EventBus, tenant: Tenant, poll_s: float = 2.0) -> None:
        self.db = db
        self.bus = bus
        self.tenant = tenant
        self.poll_s = poll_s
        self.known: dict[UUID, tuple[str, int]] = {}  # task → (status, version) last seen
        self.mine: dict[UUID, str] = {}  # task → the status this process's bus announced
        self.since: datetime | None = None
        self.wakeups = 0
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._loop: asyncio.Task[None] | None = None
        self._off: Any = None

    async def start(self) -> None:
        async with self.db.tx(self.tenant, QueryClass.LIST) as conn:
            self.since = await conn.fetchval("SELECT now()")
            rows = await conn.fetch("SELECT id, status, version FROM fleet_tasks")
        self.known = {r["id"]: (r["status"], r["version"]) for r in rows}
        self._off = self.bus.subscribe("*", self._on_local)
        await self._listen()
        self._loop = asyncio.create_task(self._run(), name="fleet-follower")

    async def stop(self) -> None:
        if self._off is not None:
            self._off()
            self._off = None
        loop, self._loop = self._loop, None
        await stop_task(loop)
        conn, self._listener = self._listener, None
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5.0)

    def _on_local(self, event: FleetEvent) -> None:
        if event.task_id is not None and event.type is EventType.STATUS_CHANGED:
            self.mine[event.task_id] = str(event.data.get("to"))

    async def _listen(self) -> None:
        try:
            conn = await asyncpg.connect(self.db.dsn, timeout=5.0)
            await conn.add_listener(CHANNEL, lambda *_: self._notified())
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            log.warning("follower: cannot LISTEN (reading every %.1fs): %s", self.poll_s, exc)
            return
        self._listener = conn

    def _notified(self) -> None:
        self.wakeups += 1
        self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.check()
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database went away for a while: try again
                log.warning("follower: %s: %s", type(exc).__name__, exc)

    async def check(self) -> list[UUID]:
        """Publish the status changes made elsewhere since the last look; their task ids."""
        assert self.since is not None, "start() first"
        async with self.db.tx(self.tenant, QueryClass.LIST) as conn:
            rows = await conn.fetch(
                """SELECT id, operator_id, status, version, description, updated_at
                     FROM fleet_tasks WHERE updated_at >= $1 ORDER BY updated_at""",
                self.since - SLACK,
            )
        changed = []
        for r in rows:
            tid, status = r["id"], r["status"]
            before = self.known.get(tid)
            self.known[tid] = (status, r["version"])
            self.since = max(self.since, r["updated_at"])
            if before is not None and before[0] == status:
                continue  # seen, or only its metadata changed (the console re-reads it)
            if self.mine.get(tid) == status:
                continue  # this process made that change: its bus said so already
            changed.append(tid)
            data = {"from": before[0] if before else None, "to": status,
                    "description": r["description"], "elsewhere": True}  # fmt: skip
            event = FleetEvent(EventType.STATUS_CHANGED, r["operator_id"], tid, data)
            await self.bus.publish(event)
        return changed
