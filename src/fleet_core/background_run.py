"""`fleet engine run`: the engine in this process, holding the engine lock, until SIGTERM or
SIGINT, or until nothing of this host is live or pending for `engine_idle_minutes` (what the
CLI's detached background engine is; a service manager may run it in the foreground too)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal

from fleet_core.background import ALREADY, say_ready
from fleet_core.config import Settings
from fleet_core.db.database import Database, QueryClass, Tenant
from fleet_core.engine import running_engine
from fleet_core.engine_lock import EngineLock, lock_path, me
from fleet_core.lifecycle import TERMINAL, TaskStatus
from fleet_core.retry import NOT_RETRIED, RETRYABLE

log = logging.getLogger(__name__)

# Statuses with nothing left for an engine to do: the ended ones, and `ready` (waiting for
# the operator's merge; `fleet merge` needs no engine).
RESTING = sorted(s.value for s in (*TERMINAL, TaskStatus.READY))
MAX_CHECK_S = 30.0


async def pending_work(db: Database, host_id: str) -> int:
    """Tasks of this host (or of none yet) that are live or pending, plus queued spawns. A
    failed task waits for the operator, not for the engine, when only `fleet retry` may retry
    it (a configuration failure)."""
    async with db.tx(Tenant.admin(), QueryClass.LIST) as conn:
        tasks = await conn.fetchval(
            """SELECT count(*) FROM fleet_tasks
                WHERE status <> ALL($1::text[]) AND (host_id = $2 OR host_id IS NULL)
                  AND NOT (status = ANY($3::text[])
                           AND coalesce(failure_context->>'reason', '') = ANY($4::text[]))""",
            RESTING,
            host_id,
            sorted(s.value for s in RETRYABLE),
            sorted(NOT_RETRIED),
        )
        queued = await conn.fetchval("SELECT count(*) FROM fleet_spawn_queue")
    return int(tasks) + int(queued)


async def run_engine(settings: Settings, ready_fd: int | None = None) -> int:
    """0 after a clean stop (signal or idle); 5 when another engine holds the lock."""
    if ready_fd is not None:
        os.set_inheritable(ready_fd, False)  # the agents' tmux server must not hold it open
    lock = EngineLock(lock_path(settings.data_dir, settings.host_id))
    holder = me("background", settings.host_id, settings.engine_idle_minutes)
    if not await asyncio.to_thread(lock.acquire, holder, wait_s=2.0):
        say_ready(ready_fd, ALREADY)
        return 5
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        try:
            async with running_engine(settings) as engine:
                say_ready(ready_fd, "ready")
                ready_fd = None
                log.info("background engine: running (pid %s)", holder.pid)
                why = await _until_idle(engine.db, settings, stop)
                log.info("background engine: stopping (%s); agents keep running", why)
        except Exception as exc:
            say_ready(ready_fd, f"{type(exc).__name__}: {exc}")
            raise
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        lock.release()
    if not stop.is_set():
        await hand_over(settings)
    return 0


async def hand_over(settings: Settings) -> str | None:
    """After an engine process let the lock go (a console quit, a server stopped, an idle
    background engine stopping while a spawn arrived): when tasks of this host still need an
    engine and none has taken the role, start the background engine. The line to tell the
    user, or None (nothing needed one, another process is the engine, or autostart is off)."""
    from fleet_core.background import running, start_detached
    from fleet_core.db.connect import open_database

    if not settings.engine_autostart or running(settings) is not None:
        return None
    try:
        db = await open_database(settings, read_only=True)
        try:
            left = await pending_work(db, settings.host_id)
        finally:
            await db.close()
        if not left:
            return None
        log.info("%s task(s) still need an engine: starting the background engine", left)
        result = await asyncio.to_thread(start_detached, settings)
    except Exception as exc:
        log.warning("handing the engine on failed: %s", exc)
        return f"fleet: could not hand the engine on: {exc}"
    if result.error is not None:
        return f"fleet: the background engine did not start: {result.error}"
    if not result.started or result.holder is None:
        return None
    return (
        f"fleet: {left} task(s) still need an engine: started the background engine "
        f"(pid {result.holder.pid}; `fleet engine status`)"
    )


async def _until_idle(db: Database, settings: Settings, stop: asyncio.Event) -> str:
    """Why the engine stops: asked to; nothing live or pending for `engine_idle_minutes`; its
    data dir removed; or its database not answering for as long (an engine that cannot reach
    its database can do nothing; the next engine reconciles the agents)."""
    idle_s = settings.engine_idle_minutes * 60
    check_s = min(MAX_CHECK_S, max(0.2, idle_s / 4))
    quiet_since: float | None = None
    unreachable_since: float | None = None
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        if not settings.data_dir.is_dir():
            return f"its data dir {settings.data_dir} is gone"
        now = loop.time()
        try:
            busy = await pending_work(db, settings.host_id)
            unreachable_since = None
        except Exception as exc:  # the database away for a moment: not idle, try again
            log.warning("background engine: cannot count pending work: %s", exc)
            busy = -1
            unreachable_since = now if unreachable_since is None else unreachable_since
            if now - unreachable_since >= idle_s:
                return (
                    f"the database has not answered for {settings.engine_idle_minutes:g} min: "
                    f"{type(exc).__name__}: {exc}"
                )
        if busy != 0:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= idle_s:
            return f"nothing live or pending for {settings.engine_idle_minutes:g} min"
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(check_s):
                await stop.wait()
    return "asked to stop"
