"""One engine per host and data dir (DESIGN §10). A console, `fleet --headless` or the demo
opens the engine's parts and then takes the engine's role if the lock is free: reconcile,
monitor, queue loop, outbox worker. When another process holds it (the CLI's background
engine, another console), this one is its client: the same conductor for the verbs, state
from the database, changes through the follower (LISTEN/NOTIFY); it keeps trying the lock,
and takes the role over as soon as the engine process exits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import IO

from fleet_core.config import Settings
from fleet_core.db.database import Tenant
from fleet_core.engine import Engine, running_engine
from fleet_core.engine_lock import EngineLock, Holder, current_holder, lock_path, me
from fleet_core.errors import ConflictError
from fleet_core.events import EventBus
from fleet_core.follower import TaskFollower
from fleet_core.monitor import MonitorConfig
from fleet_core.tasks import stop_task

log = logging.getLogger(__name__)

TAKE_OVER_POLL_S = 1.0  # how often a client tries the lock
EVICT_TIMEOUT_S = 60.0


def engine_lock(settings: Settings) -> EngineLock:
    return EngineLock(lock_path(settings.data_dir, settings.host_id))


def client_line(holder: Holder | None) -> str:
    return f"client of {holder.line()}" if holder else "client"


async def evict_background(lock: EngineLock, role: str, host: str) -> bool:
    """Take the lock from the CLI's background engine (SIGTERM; it stops cleanly, agents keep
    running); a console or server holding it is never stopped: ConflictError. True when taken."""
    holder = await asyncio.to_thread(current_holder, lock.path)
    if holder is None:
        return await asyncio.to_thread(lock.acquire, me(role, host), wait_s=0.5)
    if holder.role != "background" or holder.pid <= 0:
        raise ConflictError(f"{holder.line()} is the engine here; quit it first")
    log.info("stopping the background engine (pid %s) to take its role", holder.pid)
    with contextlib.suppress(ProcessLookupError):
        os.kill(holder.pid, signal.SIGTERM)
    return await asyncio.to_thread(lock.acquire, me(role, host), wait_s=EVICT_TIMEOUT_S)


@asynccontextmanager
async def served_engine(
    settings: Settings,
    role: str,
    *,
    tenant: Tenant,
    bus: EventBus | None = None,
    config: MonitorConfig | None = None,
    notify_stream: IO[str] | None = None,
    evict: bool = False,
    on_role: Callable[[Engine], None] | None = None,
    poll_s: float = TAKE_OVER_POLL_S,
) -> AsyncIterator[Engine]:
    """The engine for a console (`role` "console"), server ("headless") or demo ("demo"),
    as the engine or as its client (see the module). `tenant`: whose changes a client follows.
    `evict`: stop a background engine rather than be its client (the demo needs its own
    monitor). `on_role(engine)` is called when a client becomes the engine."""
    lock = engine_lock(settings)
    try:
        if evict:
            taken = await evict_background(lock, role, settings.host_id)
        else:
            taken = await asyncio.to_thread(lock.acquire, me(role, settings.host_id), wait_s=0.5)
        async with running_engine(settings, bus=bus, config=config, background=False,
                                  notify_stream=notify_stream) as engine:  # fmt: skip
            follower: TaskFollower | None = None
            watch: asyncio.Task[None] | None = None
            try:
                if taken:
                    await engine.take_part()
                    engine.serving = "engine"
                else:
                    holder = await asyncio.to_thread(current_holder, lock.path)
                    engine.serving = client_line(holder)
                    log.info("another process is the engine: %s", engine.serving)
                    follower = TaskFollower(engine.db, engine.bus, tenant)
                    await follower.start()

                    async def take_over() -> None:
                        assert follower is not None
                        while True:
                            await asyncio.sleep(poll_s)
                            mine = me(role, settings.host_id)
                            if not await asyncio.to_thread(lock.acquire, mine):
                                holder = await asyncio.to_thread(current_holder, lock.path)
                                engine.serving = client_line(holder)
                                continue
                            try:
                                await follower.check()  # what changed while nobody followed
                                await engine.take_part()
                                break
                            except Exception as exc:  # the database away, say: try again
                                log.warning("taking the engine's role failed: %s", exc)
                                lock.release()
                        await follower.stop()
                        engine.serving = "engine (took the role over)"
                        log.info("the engine process exited: this %s is the engine now", role)
                        if on_role is not None:
                            on_role(engine)

                    watch = asyncio.create_task(take_over(), name="fleet-take-over")
                yield engine
            finally:
                await stop_task(watch)
                if follower is not None:
                    await follower.stop()
    finally:
        lock.release()  # after the engine's parts stopped (running_engine's exit)
