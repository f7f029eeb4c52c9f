"""An agent's end, at once: the monitor's wake passes and the removal of finished sessions.

The launcher (outside any sandbox) records the exit, prints its last line and sends `ended
<task id>` to the run area's wake socket (runtime/wake.py); agents never reach the database
or the engine. A container's launcher cannot reach the socket: there the engine's follower
of the container's output sends the wake when its stream ends (container_logs.py). The
engine's monitor then runs a wake pass for that task: the cycle's steps (publish its last
commits, ask its forge, judge: pr_created, or failed with its reason) for it alone, after a
cycle under way and never beside one, then retries and the queue. A wake is a hint: a task
that is not running here, or whose agent still runs, is left to the cycle; one still
spawning (its agent ended before the spawn was recorded) is tried again every 0.1 s for up
to 10 s. The periodic cycle stays the safety net for a wake that never came (no listener, a
launcher killed with its agent).

Finished tasks' tmux sessions (dead panes, kept by remain-on-exit) go once their output is in
the task's log file (agent_log: the launcher's last line is there), so they do not pile up.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import TYPE_CHECKING
from uuid import UUID

from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.runtime.tmux import PaneState
from fleet_core.runtime.wake import WakeListener
from fleet_core.tasks import stop_task

if TYPE_CHECKING:
    from fleet_core.monitor import CycleReport, Monitor

log = logging.getLogger(__name__)

S = TaskStatus
EARLY_RETRY_S = 0.1
EARLY_TRIES = 100  # 10 s


class AgentEnds:
    def __init__(self, monitor: Monitor) -> None:
        self.m = monitor
        self.passes = 0  # wake passes run
        self.listener = WakeListener(monitor.c.runtime.paths.runs, self.wake_for)
        self._woken: set[UUID] = set()
        self._wake = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None
        self._dead_seen: set[UUID] = set()  # dead sessions kept at the last sweep
        self._early: dict[UUID, int] = {}  # woken while still spawning: tries so far

    def start(self) -> None:
        """Listen (unless another engine does) and run wake passes as wakes come."""
        if self._loop is None:
            self.listener.start()
            self._loop = asyncio.create_task(self._run(), name="fleet-wakes")

    async def stop(self) -> None:
        self.listener.close()
        loop, self._loop = self._loop, None
        await stop_task(loop)

    def wake_for(self, task_id: UUID) -> None:
        """A launcher said this task's agent ended: judge it now, not at the next cycle."""
        self._woken.add(task_id)
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            woken, self._woken = self._woken, set()
            await self.wake_pass(woken)

    async def wake_pass(self, ids: set[UUID]) -> CycleReport:
        """The cycle's steps for these tasks alone, once their agents have ended."""
        async with self.m.acting:  # after any cycle in progress, outside the deadline
            report = await self.m.timed("wake pass", lambda r: self._pass(ids, r))
        self.passes += 1
        return report

    async def _pass(self, ids: set[UUID], report: CycleReport) -> None:
        m, rt = self.m, self.m.c.runtime
        tasks: list[TaskRecord] = []
        for task_id in sorted(ids):
            rec = await m.admin.find(task_id)
            if rec is not None and rec.status is S.SPAWNING and rec.host_id in (None, rt.host_id):
                self._again_soon(task_id)  # ended before its spawn was recorded as running
                continue
            self._early.pop(task_id, None)
            if rec is None or rec.status is not S.RUNNING or rec.host_id != rt.host_id:
                continue  # not ours, or already moved (by a cycle, the operator)
            if m.kills.being_killed(task_id) or await rt.is_alive(task_id):
                continue  # a wake that does not hold: the cycle judges it
            tasks.append(rec)
        report.checked = len(tasks)
        if not tasks:
            return
        # The agent's last words reach its log file through tmux a moment after its end.
        await asyncio.gather(*(rt.output_settled(t.id) for t in tasks))
        await m.publisher.push(tasks, functools.partial(m.error, report))
        await m.check_all(tasks, {t.id for t in tasks}, report)
        for rec in tasks:
            moved = await m.admin.find(rec.id)
            if moved is not None and moved.status is not S.RUNNING:
                log.info("agent ended: task %s is %s at once (woken by its launcher)",
                         rec.id, moved.status.value, extra={"task": str(rec.id)})  # fmt: skip
                await rt.remove_finished_session(rec.id, exiting=True)
        await m.after(report)

    def _again_soon(self, task_id: UUID) -> None:
        """An agent can end before the spawn that started it has moved its task to running:
        its wake is tried again shortly, for as long as a spawn may take to be recorded."""
        tries = self._early.get(task_id, 0) + 1
        if tries > EARLY_TRIES:
            self._early.pop(task_id, None)
            return  # left to the cycle (a spawn stuck that long is its business)
        self._early[task_id] = tries
        asyncio.get_running_loop().call_later(EARLY_RETRY_S, self.wake_for, task_id)

    async def sweep(self, tasks: list[TaskRecord], panes: dict[UUID, PaneState]) -> None:
        """Dead sessions of tasks no longer running go once their output is in the log file
        (or, without the launcher's last line there, at the next sweep: tmux had a cycle to
        write it). Kept: sessions of running or spawning tasks (their exit is judged first),
        sessions with no task row (reported by reconcile, never touched), and sessions
        without a log file (the pane holds their only output)."""
        live = {t.id: t for t in tasks}
        dead = {task_id for task_id, pane in panes.items() if pane.dead}
        self._dead_seen &= dead
        for task_id in dead:
            rec = live.get(task_id)
            if rec is not None and rec.status in (S.RUNNING, S.SPAWNING):
                continue
            if rec is None and await self.m.admin.find(task_id) is None:
                continue
            force = task_id in self._dead_seen
            if await self.m.c.runtime.remove_finished_session(task_id, force=force):
                self._dead_seen.discard(task_id)
            else:
                self._dead_seen.add(task_id)
