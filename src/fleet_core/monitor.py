"""The monitor: moves live tasks on by themselves, every `interval_s`.

`reconcile()` runs once at start: spawning/running rows of this host whose agent session is
gone become failed (`conductor_restart`, with the previous status); agent sessions with no row
are reported, never killed. Each cycle then, in this order:

1. liveness of this host's running agents (read first, so an agent that commits and exits is
   judged with the forge's answer taken after its last push);
2. publishing: each running task's new commits are pushed from its checkout (the agent
   commits, the engine pushes);
3. the forges, in batches per repository (one engine at a time, by a transaction-level
   advisory lock held for the poll): PRs of running tasks whose agent ended well →
   pr_created (on GitHub the engine opens the PR when there is none); CI of PRs → stored
   with a versioned metadata update,
   failing → failed with the checks and log excerpt, passing → reviewing, where the review
   pipeline (fleet_core.review) takes it to ready or rejected;
4. agents that ended: exit 0 with a PR is fine; a branch that could not be pushed →
   push_failed; otherwise failed with the reason failures.classify gives (exit status, log
   tail, the adapter's patterns), the CLI's own message and what to do; an exit 0 is judged
   at once when the agent said it failed or changed nothing, whether or not the forge
   answered;
5. timeouts (the task's own timeout_minutes) and idle agents (no progress for the agent
   type's idle_minutes, see progress.py) → log tail read, then killed (beside the cycle,
   outside its deadline) and failed (`timeout`, `agent_idle` or `agent_network`); stalls (no
   new commit for `stall_s` since the agent's start or its last commit) → a warning event,
   stored on the task (agent_kills.py); interrupted spawns → failed or cancelled;
6. retries that are due (RetryEngine), then queued spawns; dead sessions of finished tasks
   are removed once their output is in the log file (agent_ends.py).

An agent's end does not wait for the next cycle: its launcher wakes the monitor, which runs
the same steps for that task at once (agent_ends.py); the cycle is the safety net.
Overlapping cycles are skipped, a cycle has a deadline, and every exception is caught and
counted: one bad task never stops the others.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fleet_core.agent_ends import AgentEnds
from fleet_core.agent_kills import AgentKills
from fleet_core.ci_start import NO_CHECKS, no_checks_for
from fleet_core.db.database import Tenant
from fleet_core.errors import InvalidTransitionError, StaleVersionError
from fleet_core.events import EventType
from fleet_core.failures import NO_PR, Verdict
from fleet_core.forge.base import CiReport, ForgeError, PrState, PullRequest
from fleet_core.judging import Judge
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import CiStatus, TaskRecord, TaskType
from fleet_core.publishing import Publisher
from fleet_core.registry import TaskRegistry
from fleet_core.retry import failure_context
from fleet_core.review.dod import required
from fleet_core.review.report import outcome
from fleet_core.runtime.handles import ExitStatus, session_name
from fleet_core.runtime.tmux import PaneState
from fleet_core.stalls import StallWatch
from fleet_core.tasks import stop_task

if TYPE_CHECKING:
    from fleet_core.conductor import Conductor

log = logging.getLogger(__name__)

S = TaskStatus
FORGE_LOCK = (17998, 1)  # pg advisory lock: one engine polls the forges per cycle
WITH_PR = (S.PR_CREATED, S.REVIEWING, S.READY)


@dataclass(frozen=True)
class MonitorConfig:
    interval_s: float = 30.0
    deadline_s: float = 25.0
    stall_s: float = 1800.0
    stuck_spawning_s: float = 120.0
    stuck_proposed_s: float = 300.0
    minute_s: float = 60.0  # a task's timeout_minutes are counted in these (the demo shortens it)
    ci_start_s: float = 600.0  # a PR whose checks have not started by then: `ci: no checks`


@dataclass
class CycleReport:
    checked: int = 0
    ended: int = 0
    prs: int = 0
    ci_updates: int = 0
    ready: int = 0
    merged: int = 0  # found merged on the forge, completed here
    failed: int = 0
    timeouts: int = 0
    stalls: int = 0
    retries: int = 0
    errors: list[str] = field(default_factory=list)
    ms: float = 0.0


@dataclass(frozen=True)
class ReconcileReport:
    orphaned: list[UUID]  # rows whose agent was gone: now failed
    untracked: list[UUID]  # agent sessions with no row: reported, left running


class Monitor:
    def __init__(self, conductor: Conductor, config: MonitorConfig | None = None) -> None:
        self.c = conductor
        self.config = config or MonitorConfig()
        self.admin = TaskRegistry(conductor.db, Tenant.admin())
        self.cycles = 0
        self.errors = 0
        self.skipped = 0
        self.last_cycle_ms: float | None = None
        self.last_error: str | None = None
        self._busy = asyncio.Lock()  # one cycle at a time (an overlapping one is skipped)
        self.acting = asyncio.Lock()  # a cycle or a wake pass: never two judging at once
        self._loop: asyncio.Task[None] | None = None
        self.panes: dict[UUID, PaneState] = {}  # this cycle's agent panes, by task
        self.publisher = Publisher(conductor)
        self.judge = Judge(conductor, self.publisher)
        self.stalls = StallWatch(conductor, self.admin, self.config.stall_s)
        self.kills = AgentKills(self)  # timeouts, idle agents (killed beside the cycle), stalls
        self.on_cycle: list[Callable[[CycleReport], None]] = []  # metrics, tests
        self.ends = AgentEnds(self)  # an agent's end, at once (its launcher wakes us)

    def health(self) -> dict[str, Any]:
        return {
            "running": self._loop is not None and not self._loop.done(),
            "cycles": self.cycles,
            "wakes": self.ends.passes,
            "listening": self.ends.listener.listening,
            "last_cycle_ms": self.last_cycle_ms,
            "errors": self.errors,
            "skipped": self.skipped,
            "last_error": self.last_error,
            "forges": self.c.forges.health(),
        }

    # -- start, stop ---------------------------------------------------------------------------

    async def start(self) -> ReconcileReport:
        report = await self.reconcile()
        if self._loop is None:
            self.ends.start()
            self._loop = asyncio.create_task(self._run(), name="fleet-monitor")
        return report

    async def stop(self) -> None:
        await self.ends.stop()
        loop, self._loop = self._loop, None
        await stop_task(loop)
        await self.kills.wait()

    async def _run(self) -> None:
        report = await self.cycle()
        log.info("monitor: first cycle done (%s tasks checked); the next in %.0f s",
                 report.checked if report else "no", self.config.interval_s)  # fmt: skip
        while True:
            await asyncio.sleep(self.config.interval_s)
            await self.cycle()

    # -- reconcile -----------------------------------------------------------------------------

    async def reconcile(self) -> ReconcileReport:
        host = self.c.runtime.host_id
        sessions = set(await self.c.runtime.list_active())
        rows = await self.admin.list_live(host_id=host)
        orphaned = []
        for rec in rows:
            if rec.status in (S.SPAWNING, S.RUNNING) and rec.id not in sessions:
                ctx = failure_context("conductor_restart", previous=rec,
                                      log_tail=await self._tail(rec))  # fmt: skip
                if await self.move(rec, S.FAILED, "conductor_restart", failure_context=ctx):
                    orphaned.append(rec.id)
        known = {r.id for r in rows}
        untracked = sorted([t for t in sessions - known if await self.admin.find(t) is None])
        for tid in untracked:
            log.warning("agent session with no task row", extra={"task": str(tid)})
        return ReconcileReport(orphaned, untracked)

    # -- the cycle -----------------------------------------------------------------------------

    async def cycle(self) -> CycleReport | None:
        """One pass over the live tasks; None when the previous cycle is still running."""
        if self._busy.locked():
            self.skipped += 1
            return None
        async with self._busy:
            report = await self.timed("cycle", self._cycle_acting)
            self.cycles += 1
            self.last_cycle_ms = report.ms
            for listener in self.on_cycle:
                listener(report)
            return report

    async def timed(self, what: str, step: Callable[[CycleReport], Awaitable[None]]) -> CycleReport:
        """`step(report)` within the cycle's deadline, timed; a timeout or an error is counted
        and kept in the report, never raised (a cycle, or a wake pass of agent_ends)."""
        report = CycleReport()
        begin = time.perf_counter()
        try:
            async with asyncio.timeout(self.config.deadline_s):  # never swallows a stop
                await step(report)
        except TimeoutError:
            self._error(report, f"{what} exceeded its {self.config.deadline_s:.0f} s deadline")
        except Exception as exc:
            self._error(report, f"{what} failed: {type(exc).__name__}: {exc}")
            log.exception("monitor %s failed", what)
        report.ms = (time.perf_counter() - begin) * 1000
        return report

    def error(self, report: CycleReport, message: str) -> None:
        self._error(report, message)

    def _error(self, report: CycleReport, message: str) -> None:
        self.errors += 1
        self.last_error = message
        report.errors.append(message)

    async def _cycle_acting(self, report: CycleReport) -> None:
        async with self.acting:
            await self._cycle(report)

    async def _cycle(self, report: CycleReport) -> None:
        host = self.c.runtime.host_id
        tasks = await self.admin.list_live()
        report.checked = len(tasks)
        self._forget_ended({t.id for t in tasks})
        self.panes = await self.c.runtime.task_panes()
        alive = await self.c.runtime.alive_tasks(self.panes)
        ended = {t.id for t in tasks if t.status is S.RUNNING and t.host_id == host} - alive
        self.kills.progress.keep_only(alive)
        await self.publisher.push([t for t in tasks if t.status is S.RUNNING and t.host_id == host],
                                  functools.partial(self._error, report))  # fmt: skip
        await self.check_all(tasks, ended, report)
        await self.ends.sweep(tasks, self.panes)
        await self.after(report)

    async def check_all(
        self, tasks: list[TaskRecord], ended: set[UUID], report: CycleReport
    ) -> None:
        prs, ci, polled = await self._poll_forges(tasks, report)
        now = datetime.now(UTC)
        for rec in tasks:
            try:
                # Whether a task's agent ended without a PR is known only if its forge answered.
                judge = rec.repository in polled
                await self._check(rec, rec.id in ended, judge, prs, ci, now, report)
            except (StaleVersionError, InvalidTransitionError):
                continue  # someone else moved it meanwhile: theirs stands
            except Exception as exc:
                self._error(report, f"task {rec.short_id}: {type(exc).__name__}: {exc}")
                log.exception("monitor failed on a task", extra={"task": str(rec.id)})

    async def after(self, report: CycleReport) -> None:
        """Retries that are due, then queued spawns (a slot may have been freed)."""
        failed = await self.admin.query(status=[S.FAILED, S.REJECTED], limit=1000)
        report.retries = await self.c.retries.run_due(failed, datetime.now(UTC))
        await self.c.drain_queue()

    def _forget_ended(self, live: set[UUID]) -> None:
        """What the monitor keeps per task (stall warnings given, push errors) ends with the
        task, so a long-lived engine does not grow with every task it ever watched."""
        self.stalls.forget_ended(live)
        self.publisher.forget_ended(live)
        self.c.runtime.heads.keep_only(live)

    async def _alive(self, rec: TaskRecord) -> bool:
        return await self.c.runtime.is_alive(rec.id)

    async def _poll_forges(
        self, tasks: list[TaskRecord], report: CycleReport
    ) -> tuple[dict[UUID, PullRequest], dict[UUID, CiReport], set[str]]:
        """PRs of running tasks and CI of tasks with PRs, in batches per repository, and the
        repositories whose forge answered; nothing while another engine holds the forge lock."""
        prs: dict[UUID, PullRequest] = {}
        ci: dict[UUID, CiReport] = {}
        polled: set[str] = set()
        by_repo: dict[str, list[TaskRecord]] = defaultdict(list)
        for rec in tasks:
            if rec.status is S.RUNNING or (rec.status in WITH_PR and rec.pr_number):
                by_repo[rec.repository].append(rec)
        if not by_repo:
            return prs, ci, polled
        # A transaction-level lock, held by a transaction that lasts as long as the poll: it
        # ends with that transaction whatever interrupts the poll (a cancelled cycle, a broken
        # connection, a killed engine), since the pool rolls back or drops a connection
        # released mid-transaction. A session lock would outlive an interrupted unlock on a
        # pooled connection and stop every engine from polling.
        async with self.c.db.tx(Tenant.admin()) as conn:
            if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", *FORGE_LOCK):
                return prs, ci, polled
            for repo_text, recs in by_repo.items():
                try:
                    await self._poll_repo(Path(repo_text), recs, prs, ci)
                    polled.add(repo_text)
                    self.c.forges.problems.answered(repo_text)
                except (ForgeError, OSError) as exc:
                    self._error(report, f"forge for {repo_text}: {exc}")
                    self.c.forges.problems.failed(repo_text, str(exc))
        await self.c.forges.problems.save()  # what `fleet status` reads
        return prs, ci, polled

    async def _poll_repo(
        self,
        repo: Path,
        recs: list[TaskRecord],
        prs: dict[UUID, PullRequest],
        ci: dict[UUID, CiReport],
    ) -> None:
        forge = await self.c.forges.for_repo(repo)
        running = [r for r in recs if r.status is S.RUNNING]
        reviewed = [r for r in recs if r.status in WITH_PR and r.pr_number]
        found, reports = await forge.poll(
            repo, [r.branch for r in running], [r.pr_number for r in reviewed if r.pr_number]
        )
        prs.update({r.id: found[r.branch] for r in running if r.branch in found})
        ci.update({r.id: reports[r.pr_number] for r in reviewed if r.pr_number in reports})

    async def _check(
        self,
        rec: TaskRecord,
        ended: bool,
        judge: bool,
        prs: dict[UUID, PullRequest],
        ci: dict[UUID, CiReport],
        now: datetime,
        report: CycleReport,
    ) -> None:
        if self.kills.being_killed(rec.id):
            return  # being killed for its timeout: that kill moves it
        pr = prs.get(rec.id)
        mine = rec.host_id == self.c.runtime.host_id
        # A PR counts once its agent has ended well: the engine pushes every commit while the
        # agent works, so a branch on the forge is not yet a finished attempt (and on a retry
        # it is still the previous attempt's head). Another host's agent: the PR says so.
        status = await self.c.runtime.exit_status(rec.id) if ended else None
        well = not ended or (status is not None and status.code == 0)
        if rec.status is S.RUNNING and ended and well and rec.task_type is TaskType.REVIEW and mine:
            to, reason, update = await outcome(self.c, rec)  # no PR: its report is its DoD
            if await self.move(rec, to, reason, **update):
                report.ended += 1
            return
        if rec.status is S.RUNNING and pr is not None and (ended or not mine) and well:
            rec = await self.move(rec, S.PR_CREATED, "pr_found", pr_number=pr.number) or rec
            report.prs += 1
        elif rec.status is S.RUNNING and ended:
            pushed = rec.id not in self.publisher.errors
            if status is not None and status.code == 0 and not judge and pushed:
                # Whether it made a PR, the forge says next cycle; unless its own exit tells
                # already: it said it failed, or it changed nothing.
                verdict = await self._verdict(rec, status)
                if verdict.reason == NO_PR and await self._diff(rec) is not None:
                    return
            if status is not None and status.code == 0 and pushed:
                opened = await self.publisher.open_pr(rec)
                if opened is not None:  # the engine opens the PR (GitHub); agents never do
                    await self.move(rec, S.PR_CREATED, "pr_opened", pr_number=opened.number)
                    report.prs += 1
                    return
            report.ended += 1
            await self._agent_ended(rec, status, report)
            return
        if rec.status in WITH_PR and rec.id in ci:
            await self._ci(rec, ci[rec.id], report, now)
            return
        if mine and rec.status is S.RUNNING:
            await self.kills.timeout_or_stall(rec, now, report)
        elif mine and rec.status is S.SPAWNING:
            if _age(rec.updated_at, now) > self.config.stuck_spawning_s:
                await self._stuck_spawning(rec)
        elif rec.status is S.PROPOSED and _age(rec.updated_at, now) > self.config.stuck_proposed_s:
            await self.move(rec, S.CANCELLED, "spawn_interrupted")

    async def _stuck_spawning(self, rec: TaskRecord) -> None:
        """A spawn whose saga was interrupted (its engine died): adopt the agent if it runs,
        else fail the task."""
        if await self._alive(rec):
            handle = {
                "tmux_session": session_name(rec.id),
                "worktree_path": str(self.c.runtime.paths.worktrees / str(rec.id)),
                "host_id": self.c.runtime.host_id,
                "spawned_at": datetime.now(UTC),
            }
            await self.move(rec, S.RUNNING, "adopted", **handle)
            return
        ctx = failure_context("spawn_interrupted", previous=rec)
        await self.move(rec, S.FAILED, "spawn_interrupted", failure_context=ctx)

    async def _agent_ended(
        self, rec: TaskRecord, status: ExitStatus | None, report: CycleReport
    ) -> None:
        verdict, ctx = await self.judge.ended(rec, status)
        reason, resume = verdict.reason, verdict.resume_at
        if await self.move(rec, S.FAILED, reason, failure_context=ctx):
            report.failed += 1
            if resume is not None:
                await self.c.bus.emit(
                    EventType.PAUSED,
                    operator_id=rec.operator_id,
                    task_id=rec.id,
                    until=resume.isoformat(),
                )

    async def _ci(self, rec: TaskRecord, ci: CiReport, report: CycleReport, now: datetime) -> None:
        if ci.pr_state is PrState.MERGED and rec.status is S.READY:
            # Merged on the forge while the task was not moved (a merge whose engine died
            # after the forge merged, or a merge on the forge's own page): it is done.
            await self.c.complete_merge(rec, by="monitor", sha=None)
            report.merged += 1
            return
        if ci.state is not rec.ci_status:
            rec = await self.admin.update_metadata(
                rec.id, {"ci_status": ci.state}, expected_version=rec.version
            )
            report.ci_updates += 1
        if ci.state is CiStatus.FAILING and rec.status in (S.PR_CREATED, S.READY):
            ctx = failure_context(
                "ci_failed",
                previous=rec,
                failing_checks=list(ci.failing),
                diff=await self._diff(rec),
                ci_log=ci.log_excerpt,
                ci_url=ci.url,
            )
            await self.move(rec, S.FAILED, "ci_failed", failure_context=ctx)
            report.failed += 1
        elif no_checks_for(rec, ci, now, self.config.ci_start_s):  # fleet_core.ci_start
            if not required(self.c.dod, rec.task_type)["ci"]:
                await self.c.reviews.begin(rec, ci.head_sha)  # the DoD does not ask for CI
                return
            minutes = round(self.config.ci_start_s / self.config.minute_s, 2)
            ctx = failure_context(NO_CHECKS, previous=rec, ci_url=ci.url, ci_start_minutes=minutes)
            await self.move(rec, S.FAILED, NO_CHECKS, failure_context=ctx)
            report.failed += 1
        elif ci.state is CiStatus.PASSING and rec.status is S.PR_CREATED:
            await self.c.reviews.begin(rec, ci.head_sha)  # reviewing; the review runs beside
        elif rec.status is S.REVIEWING:
            self.c.reviews.ensure(rec)  # an engine that restarted takes its reviews up again

    # What failure judging (judging.py) gives, under the names the cycle's steps use.
    async def _verdict(
        self, rec: TaskRecord, status: ExitStatus | None, tail: str | None = None
    ) -> Verdict:
        return await self.judge.verdict(rec, status, tail)

    async def _diff(self, rec: TaskRecord) -> str | None:
        return await self.judge.diff(rec)

    async def _tail(self, rec: TaskRecord) -> str | None:
        return await self.judge.tail(rec)

    async def move(
        self, rec: TaskRecord, to: TaskStatus, reason: str, **update: Any
    ) -> TaskRecord | None:
        """The transition, or None when another engine or the operator moved it first."""
        try:
            return await self.c.moves.move(rec, to, reason=reason, update=update or None)
        except (StaleVersionError, InvalidTransitionError):
            return None


def _age(since: datetime, now: datetime) -> float:
    return (now - since).total_seconds()
