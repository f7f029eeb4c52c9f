"""The outbox worker, in every engine: claims due `fleet_outbox` rows and hands each to the
dispatcher.

A claim is `FOR UPDATE SKIP LOCKED` plus a lease (`locked_by`, `locked_until`): engines on
one database never hold one row at once, and a row whose engine died is free again when the
lease runs out, or at once when that engine restarts (it releases its own leases first). A
delivery cut off by a crash is therefore repeated: a receiver sees an event's id at most
twice for one crash, and can drop the repeat by that id.

The worker wakes on LISTEN fleet_outbox (a trigger notifies every insert), on the earliest
retry falling due, and at least every `poll_s` (the fallback when the listening connection
is down).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg

from fleet_core.db.database import Database, QueryClass, Tenant
from fleet_core.notify.delivery import Dispatcher
from fleet_core.tasks import stop_task

log = logging.getLogger(__name__)
ADMIN = Tenant.admin()
CHANNEL = "fleet_outbox"


@dataclass
class WorkerStats:
    claimed: int = 0
    processed: int = 0
    errors: int = 0
    wakeups: int = 0
    listening: bool = False
    last_error: str | None = None


class OutboxWorker:
    def __init__(
        self,
        db: Database,
        dispatcher: Dispatcher,
        *,
        engine_id: str,
        poll_s: float = 5.0,
        lease_s: float = 60.0,
        batch: int = 50,
        concurrency: int = 8,
        after: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        """`after`: work done after each round of claims (the NATS pump), with the same
        wake-ups; it returns how much it did (more may be waiting)."""
        self.db = db
        self.dispatcher = dispatcher
        self.engine_id = engine_id
        self.poll_s = poll_s
        self.lease_s = lease_s
        self.batch = batch
        self.concurrency = concurrency
        self.after = after
        self.stats = WorkerStats()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._listener: asyncpg.Connection[Any] | None = None

    async def start(self) -> None:
        released = await self.release_own()
        if released:
            log.info("outbox: released %d rows held before a restart", released)
        if self.dispatcher.store is not None:
            await self.dispatcher.store.seal_pending()
        await self._listen()
        self._task = asyncio.create_task(self._loop(), name="outbox-worker")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop the loop. With `drain_s`, the loop first finishes the round it is in and
        runs one more (it delivers and publishes what is due), for at most `drain_s`; what
        is left waits in the database for the next engine. The loop drains alone: a second
        drain beside it would find the NATS pump's lock held and publish nothing."""
        task, self._task = self._task, None
        if task is not None:
            if drain_s > 0 and not task.done():
                self._stopping = True
                self._wake.set()
                done, _ = await asyncio.wait({task}, timeout=drain_s)
                if not done:
                    log.info("outbox: stopped before draining (%.1fs)", drain_s)
            await stop_task(task)
        self._stopping = False
        await self._unlisten()

    async def release_own(self) -> int:
        """Free the rows this engine held when it last stopped (crashed)."""
        async with self.db.tx(ADMIN) as conn:
            status = await conn.execute(
                "UPDATE fleet_outbox SET locked_by = NULL, locked_until = NULL "
                "WHERE locked_by = $1 AND processed_at IS NULL",
                self.engine_id,
            )
        return int(status.split()[-1])

    async def claim(self) -> list[Any]:
        async with self.db.tx(ADMIN, QueryClass.LIST) as conn:
            rows = await conn.fetch(
                """UPDATE fleet_outbox o
                      SET locked_by = $1, locked_until = now() + make_interval(secs => $2)
                    WHERE o.id IN (
                          SELECT id FROM fleet_outbox
                           WHERE processed_at IS NULL AND dead_at IS NULL
                             AND next_attempt_at <= now()
                             AND (locked_until IS NULL OR locked_until < now())
                           ORDER BY next_attempt_at, created_at
                           LIMIT $3
                           FOR UPDATE SKIP LOCKED)
                RETURNING o.*""",
                self.engine_id, self.lease_s, self.batch,
            )  # fmt: skip
        return sorted(rows, key=lambda r: (r["created_at"], r["id"]))

    async def run_once(self) -> int:
        """Claim a batch and process it; returns how many rows were claimed. The events of
        one task go one after another, oldest first; different tasks' in parallel (at most
        `concurrency` at once)."""
        rows = await self.claim()
        self.stats.claimed += len(rows)
        groups: dict[str, list[Any]] = {}
        for row in rows:  # sorted by created_at
            key = (row["payload"] or {}).get("task_id") or str(row["id"])
            groups.setdefault(str(key), []).append(row)
        gate = asyncio.Semaphore(self.concurrency)

        async def one_task(group: list[Any]) -> None:
            async with gate:
                for row in group:
                    await self._process(row)

        await asyncio.gather(*(one_task(g) for g in groups.values()))
        return len(rows)

    async def _process(self, row: Any) -> None:
        try:
            await self.dispatcher.process(row, self.engine_id)
            self.stats.processed += 1
        except Exception as exc:
            self.stats.errors += 1
            self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
            log.exception("outbox: processing a row failed", extra={"row": str(row["id"])})
            await self._back_off(row)

    async def _back_off(self, row: Any) -> None:
        with contextlib.suppress(Exception):
            delay = self.dispatcher.policy.delay(int(row["retry_count"]) + 1, None)
            async with self.db.tx(ADMIN) as conn:
                await conn.execute(
                    "UPDATE fleet_outbox SET locked_by = NULL, locked_until = NULL, "
                    "retry_count = retry_count + 1, error = $3, "
                    "next_attempt_at = now() + make_interval(secs => $4) "
                    "WHERE id = $1 AND locked_by = $2",
                    row["id"], self.engine_id, self.stats.last_error, delay,
                )  # fmt: skip

    async def next_due_in(self) -> float | None:
        async with self.db.tx(ADMIN) as conn:
            value = await conn.fetchval(
                "SELECT extract(epoch FROM min(greatest(next_attempt_at, "
                "coalesce(locked_until, next_attempt_at))) - now()) FROM fleet_outbox "
                "WHERE processed_at IS NULL AND dead_at IS NULL"
            )
        return None if value is None else max(0.0, float(value))

    async def drain(self) -> None:
        """Process what is due now, then run `after` (the NATS pump) until it has nothing."""
        while await self.run_once():
            pass
        if self.after is not None:
            while await self.after() > 0:
                pass

    async def _loop(self) -> None:
        while True:
            stopping = self._stopping
            try:
                await self.drain()
                if stopping:
                    return
                due = await self.next_due_in()
                if self._listener is None or self._listener.is_closed():
                    await self._listen()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.stats.errors += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.warning("outbox worker: %s", self.stats.last_error)
                if stopping:
                    return
                due = None
            timeout = self.poll_s if due is None else min(self.poll_s, due + 0.01)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()

    def _on_notify(self, *_: Any) -> None:
        self.stats.wakeups += 1
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def _listen(self) -> None:
        await self._unlisten()
        try:
            conn = await asyncpg.connect(self.db.dsn, timeout=5.0)
            await conn.add_listener(CHANNEL, self._on_notify)
            conn.add_termination_listener(lambda _c: setattr(self.stats, "listening", False))
        except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
            self.stats.listening = False
            log.warning("outbox: cannot LISTEN (polling every %.1fs): %s", self.poll_s, exc)
            return
        self._listener = conn
        self.stats.listening = True
        self._wake.set()  # whatever arrived while nobody listened

    async def _unlisten(self) -> None:
        conn, self._listener = self._listener, None
        self.stats.listening = False
        if conn is not None and not conn.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 5.0)
