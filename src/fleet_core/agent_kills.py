"""Agents that ran too long or went quiet: the monitor's timeouts, idle agents and stalls.

Each cycle, for a running task of this host (step 5 of monitor.py): past its own
timeout_minutes, or with no progress for its agent type's idle_minutes (progress.py: log
output, the agent's CPU, its checkout), its log tail and diff are read, then its agent is
killed and the task fails (`timeout`, `agent_idle`, or `agent_network` when its last words
say so: failures.idle_reason). Otherwise no new commit for `stall_s` is a stall: a
warning event, stored on the task (stalls.py), never a kill.

A kill (its grace, then SIGKILL) runs beside the cycle, never inside its deadline: a cancelled
kill would leave the agent running and its task unfailed. While it runs the task is left
alone by the cycle and by wake passes (`being_killed`); the monitor's stop waits for the
kills under way, and a kill that fails is counted among the monitor's errors.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fleet_core.failures import TIMEOUT, Verdict, idle_reason
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.progress import ProgressWatch
from fleet_core.retry import failure_context

if TYPE_CHECKING:
    from fleet_core.monitor import CycleReport, Monitor

log = logging.getLogger(__name__)

S = TaskStatus


class AgentKills:
    def __init__(self, monitor: Monitor) -> None:
        self.m = monitor
        self._kills: dict[UUID, asyncio.Task[None]] = {}  # timed-out or idle agents being killed
        self.progress = ProgressWatch(
            monitor.c.runtime.paths.data_dir, fingerprint_every_s=monitor.config.minute_s / 2
        )

    def being_killed(self, task_id: UUID) -> bool:
        return task_id in self._kills

    async def wait(self) -> None:
        """Kills under way finish (each is bounded by the kill grace): an agent half-killed
        would stay running with its task still `running`."""
        await asyncio.gather(*self._kills.values(), return_exceptions=True)

    async def timeout_or_stall(self, rec: TaskRecord, now: datetime, report: CycleReport) -> None:
        m = self.m
        started = rec.spawned_at or rec.created_at
        limit = rec.timeout_minutes * m.config.minute_s
        if (now - started).total_seconds() > limit:
            report.timeouts += 1
            self._kill_beside(rec, Verdict(TIMEOUT), timeout_minutes=rec.timeout_minutes)
            return
        adapter = m.c.runtime.adapters.get(rec.agent_type)
        if adapter is not None:
            pane = m.panes.get(rec.id)
            pid = pane.pid if pane else await m.c.runtime.agent_pid(rec.id)
            idle = await self.progress.idle_for(
                rec.id,
                log_path=m.c.runtime.log_path(rec.id),
                pane_pid=pid,
                checkout=Path(rec.worktree_path) if rec.worktree_path else None,
                profile=adapter.profile,
            )
            if idle > adapter.idle_minutes * m.config.minute_s:
                tail = await m.judge.tail(rec) or ""
                report.timeouts += 1
                self._kill_beside(rec, idle_reason(adapter.profile, tail),
                                  idle_minutes=adapter.idle_minutes)  # fmt: skip
                return
        if await m.stalls.check(rec, started, now):
            report.stalls += 1

    def _kill_beside(self, rec: TaskRecord, verdict: Verdict, **fields: Any) -> None:
        """The kill (its grace, then SIGKILL) runs beside the cycle, never inside its
        deadline: a cancelled kill would leave the agent running and the task unfailed."""
        if rec.id in self._kills:
            return
        task = asyncio.create_task(self._stop_agent(rec, verdict, fields),
                                   name=f"fleet-{verdict.reason}-{rec.id}")  # fmt: skip
        self._kills[rec.id] = task
        task.add_done_callback(functools.partial(self._killed, rec.id))

    async def _stop_agent(self, rec: TaskRecord, verdict: Verdict, fields: dict[str, Any]) -> None:
        """The log tail and diff first, then the kill, then running → failed with the
        verdict's reason (`timeout`, `agent_idle`, `agent_network`)."""
        m = self.m
        tail = await m.judge.tail(rec)
        diff = await m.judge.diff(rec)
        await m.c.runtime.kill(rec.id)
        self.progress.forget(rec.id)
        ctx = failure_context(verdict.reason, previous=rec, diff=diff, log_tail=tail,
                              message=verdict.message, **fields)  # fmt: skip
        await m.move(rec, S.FAILED, verdict.reason, failure_context=ctx)

    def _killed(self, task_id: UUID, task: asyncio.Task[None]) -> None:
        self._kills.pop(task_id, None)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            self.m.errors += 1
            self.m.last_error = f"timeout of task {str(task_id)[:8]}: {type(exc).__name__}: {exc}"
            log.error("timing out a task failed", exc_info=exc, extra={"task": str(task_id)})
