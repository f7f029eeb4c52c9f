"""ConductorEngine: the operator verbs (spawn, stop, delete, retry, merge, logs, attach,
status, show) on top of the governor, the router, the spawn saga, the runtime, the forges and
the registry, plus the loop that admits queued spawns.

A spawn is validated, routed and admitted (or queued) here, then started by the spawn saga
(spawn_saga.py): the task row always exists before any process starts (INV-015).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import UUID

from fleet_core.auth.secret_store import SecretStore
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import (
    ActiveTaskDeletionError,
    BadInputError,
    InvalidTransitionError,
    MergeRefusedError,
    NoSessionError,
    OtherHostError,
    SpawnDeniedError,
    StaleVersionError,
)
from fleet_core.events import EventBus, EventType
from fleet_core.forge.select import ForgeSet
from fleet_core.governor import DEFAULT_TIER_LIMITS, Governor, Limits
from fleet_core.lifecycle import LIVE, TERMINAL, TaskStatus
from fleet_core.models import (
    AgentType,
    CiStatus,
    FleetStatusSummary,
    NewTask,
    RuntimeMode,
    SpawnRequest,
    TaskRecord,
    Tier,
)
from fleet_core.registry import TaskRegistry
from fleet_core.repositories import Repositories
from fleet_core.retry import RetryEngine, RetryPolicy
from fleet_core.review.dod import check_dod, parse_dod
from fleet_core.review.pipeline import ReviewPipeline
from fleet_core.review.reputation import RouteScores
from fleet_core.review.settings import ReviewSettings, review_settings
from fleet_core.router import ModelRouter, Route
from fleet_core.runtime import git as g
from fleet_core.runtime.adapters import build_adapters
from fleet_core.runtime.cleanup import CleanupResult
from fleet_core.runtime.limits import AgentLimits
from fleet_core.runtime.modes import Runtimes
from fleet_core.runtime.paths import RuntimePaths
from fleet_core.runtime.policy import sandbox_for
from fleet_core.runtime.repo_config import RepoConfig, load_repo_config
from fleet_core.runtime.sandbox import SandboxMode
from fleet_core.runtime.secrets import SecretProvider
from fleet_core.runtime.validation import validate_branch
from fleet_core.saga import SagaError
from fleet_core.spawn_queue import Queued, QueueEntry
from fleet_core.spawn_saga import STALE_RETRIES, SpawnSaga
from fleet_core.transitions import Transitions
from fleet_core.wording import now

log = logging.getLogger(__name__)
MERGE_MOVE_ATTEMPTS = 5  # a merged PR's task moved again after this many stale rows: give up
ATTACH_TAIL_LINES = 15  # of the log, when attach is refused because the agent ended


@dataclass(frozen=True)
class Actor:
    """Who asks: the local operator (CLI, console) or a verified token's subject (API)."""

    operator_id: str
    tier: Tier
    admin: bool = False

    @property
    def tenant(self) -> Tenant:
        return Tenant.operator(self.operator_id, admin=self.admin)


@dataclass(frozen=True)
class SpawnOutcome:
    task: TaskRecord | None = None  # admitted (and running), or the earlier task of the key
    queued: Queued | None = None
    existing: bool = False
    route: Route | None = None


@dataclass(frozen=True)
class Deleted:
    task: TaskRecord
    cleanup: CleanupResult | None


MAX_NOTE = 2000


def check_note(note: str | None) -> str | None:
    """The operator's note for a retry: None, or 1-2000 characters that are not all blank."""
    if note is None:
        return None
    if not note.strip():
        raise BadInputError("note", "must not be blank")
    if len(note) > MAX_NOTE:
        raise BadInputError("note", f"at most {MAX_NOTE} characters")
    return note.strip()


def branch_name(description: str, task_id: UUID) -> str:
    words = re.findall(r"[a-z0-9]+", description.lower())[:6]
    slug = "-".join(words)[:40].strip("-") or "task"
    return f"fleet/{slug}-{str(task_id)[:8]}"


@dataclass(frozen=True)
class Stopped:
    """What `stop` did: `task` as it is now; `already_ended` when it had ended before (its
    status is the one it ended with); `killed` when an agent process was stopped."""

    task: TaskRecord
    already_ended: bool
    killed: bool


class Conductor:
    def __init__(
        self,
        db: Database,
        runtime: Runtimes,
        *,
        governor: Governor,
        router: ModelRouter,
        bus: EventBus,
        forges: ForgeSet,
        repos: dict[str, dict[str, Any]] | None = None,
        queue_poll_s: float = 2.0,
        retry_policy: RetryPolicy | None = None,
        default_tier: Tier = Tier.SOVEREIGN,
        reviews: ReviewSettings | None = None,
        dod: dict[str, Any] | None = None,
        default_runtime: str = "local",
    ) -> None:
        self.db = db
        self.runtime = runtime
        self.governor = governor
        self.router = router
        self.bus = bus
        self.repos = repos or {}
        self.repositories = Repositories(db)
        self.queue_poll_s = queue_poll_s
        self.moves = Transitions(db, bus)
        self.launcher = SpawnSaga(db, runtime, router, self.moves, repos=self.repos)
        self.forges = forges
        self.retries = RetryEngine(self, retry_policy)
        self.default_tier = default_tier
        self.reviews = ReviewPipeline(self, reviews or ReviewSettings())
        self.dod = parse_dod(dod or {})  # the Definition of Done per task type
        self.scores = RouteScores(db)
        self.default_runtime = default_runtime
        runtime.expect_containers = self.uses_containers
        self._drain_lock = asyncio.Lock()
        self._loop: asyncio.Task[None] | None = None
        self.queue_errors = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        db: Database,
        *,
        bus: EventBus | None = None,
        sandbox_default: SandboxMode = SandboxMode.AUTO,
    ) -> Conductor:
        bus = bus or EventBus()
        sandbox, unsandboxed = sandbox_for(settings, sandbox_default)
        runtime = Runtimes(
            RuntimePaths.from_settings(settings),
            build_adapters(settings.agents),
            SecretProvider(
                db,
                settings.secrets,
                store=SecretStore.for_settings(settings, db),
                local_operator=settings.operator,
            ),
            host_id=settings.host_id,
            kill_grace_s=settings.kill_grace_seconds,
            sandbox=sandbox,
            unsandboxed_reason=unsandboxed,
            agent_limits=AgentLimits(settings.agent_memory_mb, settings.agent_pids),
            container=settings.container,
        )
        limits = Limits({**DEFAULT_TIER_LIMITS, **settings.tier_limits}, settings.global_cap)
        forges = ForgeSet(
            settings.data_dir / "forge",
            repos=settings.repos,
            merge_method=settings.merge_method,
            ci_timeout_s=settings.ci_timeout_seconds,
            gh=settings.gh,
            confinement=runtime.confinement,
        )
        return cls(
            db,
            runtime,
            governor=Governor(db, limits, bus),
            router=ModelRouter.from_config(settings.routing),
            bus=bus,
            forges=forges,
            repos=settings.repos,
            queue_poll_s=settings.queue_poll_seconds,
            retry_policy=RetryPolicy(settings.retry_base_seconds, settings.retry_max_seconds),
            default_tier=settings.tier,
            reviews=review_settings(settings),
            dod=settings.dod,
            default_runtime=settings.runtime,
        )

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Admit queued spawns in the background as slots free (every engine does this; the
        database makes sure each entry is admitted once)."""
        if self._loop is None:
            self._loop = asyncio.create_task(self._queue_loop(), name="fleet-queue")

    async def stop_engine(self) -> None:
        """Stop the background work; agents keep running in tmux."""
        if self._loop is not None:
            self._loop.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop
            self._loop = None
        await self.reviews.stop()
        await self.forges.close()
        await self.runtime.close()

    async def __aenter__(self) -> Conductor:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop_engine()

    async def _queue_loop(self) -> None:
        while True:
            try:
                await self.drain_queue()
            except Exception:
                self.queue_errors += 1
                log.exception("queue drain failed")
            await asyncio.sleep(self.queue_poll_s)

    # -- spawn -----------------------------------------------------------------------------

    async def spawn(
        self, actor: Actor, request: SpawnRequest, *, queue: bool = False, demo: bool = False
    ) -> SpawnOutcome:
        """Validate, route, admit (or queue), then run the spawn saga. The repository is one
        granted to the actor (by name or path); nothing on disk is looked at before that.
        `demo`: a task of `fleet demo` (marked, so the demo removes only its own)."""
        repo = await self._repository(actor, request.repository)
        if request.base_branch:
            validate_branch(request.base_branch, "base_branch")
            await g.base_ref(repo, request.base_branch)  # an unknown base is bad input
        route = self.router.route(
            request.task_type,
            model=request.model,
            agent_type=request.agent_type,
            scores=await self.scores.for_task_type(request.task_type),  # reputation (T-8.2)
        )
        mode = self.runtime_mode(request.runtime, route.agent_type, repo)
        await self.runtime.require_runtime(mode, route.agent_type)  # the binary, or the daemon
        task = NewTask(
            agent_type=route.agent_type,
            model=route.model,
            task_type=request.task_type,
            description=request.description,
            branch="fleet/pending",
            repository=str(repo),
            base_branch=request.base_branch,
            max_retries=request.max_retries,
            timeout_minutes=request.timeout_minutes,
            context_overrides=request.context_overrides,
            idempotency_key=request.idempotency_key,
            host_id=self.runtime.host_id,
            demo=demo,
            runtime=mode,
        )
        task = task.model_copy(update={"branch": branch_name(request.description, task.id)})
        if not queue and request.idempotency_key is None:
            try:
                self.governor.precheck(actor.operator_id, actor.tier)
            except SpawnDeniedError as denial:
                await self.bus.emit(
                    EventType.SPAWN_DENIED, operator_id=actor.operator_id, **denial.to_dict()
                )
                raise
        admission = await self.governor.admit(
            task,
            operator_id=actor.operator_id,
            tier=actor.tier,
            queue=queue,
            request={"route": {"reason": route.reason.value, "detail": route.detail}},
        )
        if isinstance(admission, Queued):
            return SpawnOutcome(queued=admission, existing=admission.existing, route=route)
        if admission.existing:
            return SpawnOutcome(task=admission.task, existing=True)
        running = await self.launcher.launch(admission.task, route.reason.value)
        return SpawnOutcome(task=running, route=route)

    @property
    def uses_containers(self) -> bool:
        """Container mode is configured (globally or for an agent type)."""
        return self.default_runtime == "container" or any(
            a.runtime == "container" for a in self.runtime.adapters.values()
        )

    def runtime_mode(self, asked: str | None, agent: AgentType, repo: Path) -> RuntimeMode:
        """Where a spawn's agent runs: the spawn's choice, else its agent type's, its
        repository's, the global setting."""
        adapter = self.runtime.adapters.get(agent)
        for choice in (asked, adapter.runtime if adapter else None,
                       self._repo_config(repo).runtime, self.default_runtime):  # fmt: skip
            if choice == "container":
                return "container"
            if choice == "local":
                return "local"
        return "local"

    async def _repository(self, actor: Actor, ref: str) -> Path:
        granted = await self.repositories.resolve(actor.tenant, ref)
        top, _common = await g.repo_paths(Path(granted.path))
        self._repo_config(top)  # a broken .fleet.toml is reported before anything is written
        return top

    async def require_granted(self, rec: TaskRecord) -> None:
        """The task's repository is still granted to the task's operator (a revoked or
        removed repository takes no more merges or retries)."""
        await self.repositories.resolve(Tenant.operator(rec.operator_id), rec.repository)

    def _repo_config(self, repo: Path) -> RepoConfig:
        return load_repo_config(repo, self.repos)

    def repo_config(self, repo: Path) -> RepoConfig:
        """The repository's settings (its `.fleet.toml` under fleet.toml's `[repos]`)."""
        return self._repo_config(repo)

    async def relaunch(self, rec: TaskRecord, budget: int) -> TaskRecord:
        """The saga again for a task the retry engine moved to `retrying`."""
        return await self.launcher.launch(rec, "retry", budget=budget)

    async def tier_of(self, operator_id: str) -> Tier:
        """The tier the engine acts with for an operator when no caller is present (retries):
        the tier an admin stored for them, else the configured default."""
        return await self.governor.stored_tier(operator_id) or self.default_tier

    # -- retry and merge -------------------------------------------------------------------

    async def retry(self, actor: Actor, ref: str, *, note: str | None = None) -> TaskRecord:
        """Retry a failed or rejected task now (same rules as the automatic retries); `note`
        goes into the next attempt's prompt."""
        note = check_note(note)
        rec = await self.registry(actor).resolve(ref)
        self._require_local(rec)
        return await self.retries.retry(rec, tier=actor.tier, note=note)

    async def merge(self, actor: Actor, ref: str, *, force: bool = False) -> TaskRecord:
        """Merge a ready task's PR through its forge, then clean its worktree up (work that only
        the worktree holds is snapshotted first). Idempotent: a task merged already (by an
        earlier call, or found merged by the monitor) is answered as it is, and a PR the forge
        merged before its task could be moved (a crash between the two) completes the task."""
        rec = await self.registry(actor).resolve(ref)
        if rec.status is TaskStatus.MERGED:
            return rec
        if rec.status is not TaskStatus.READY:
            raise MergeRefusedError(
                f"task {rec.short_id} {now(rec.status.value)}; only a ready task can be merged"
            )
        if rec.pr_number is None:
            raise MergeRefusedError(f"task {rec.short_id} has no pull request")
        if rec.ci_status is not CiStatus.PASSING:
            state = rec.ci_status.value if rec.ci_status else "unknown"
            raise MergeRefusedError(f"CI of PR #{rec.pr_number} is not passing ({state})")
        await self.require_granted(rec)
        # The Definition of Done again (the base may have moved); `force` merges anyway,
        # audited with what was unmet.
        unmet = [i.line() for i in (await check_dod(self, rec)).unmet]
        if unmet and not force:
            raise MergeRefusedError(f"task {rec.short_id} does not meet its Definition of Done: "
                                    f"{'; '.join(unmet)} (--force merges anyway)")  # fmt: skip
        repo = Path(rec.repository)
        forge = await self.forges.for_repo(repo)
        result = await forge.merge(repo, rec.pr_number, method=self.forges.merge_method)
        if not result.merged:
            raise MergeRefusedError(f"{forge.name} refused to merge PR #{rec.pr_number}: "
                                    f"{result.reason or 'no reason given'}")  # fmt: skip
        forced = {"forced": True, "unmet": unmet} if unmet else None
        return await self.complete_merge(rec, by=actor.operator_id, sha=result.sha, forced=forced)

    async def complete_merge(
        self, rec: TaskRecord, *, by: str, sha: str | None, forced: dict[str, Any] | None = None
    ) -> TaskRecord:
        """ready → merged for a task whose PR the forge has merged, then its worktree's
        cleanup. The forge's merge stands whatever moved the row meanwhile: a stale row is
        read again and moved from there (a merged PR never answers a conflict)."""
        registry = self.moves.registry(rec.operator_id)
        for attempt in range(MERGE_MOVE_ATTEMPTS):
            try:
                done = await self.moves.move(
                    rec,
                    TaskStatus.MERGED,
                    reason="merged",
                    audit_detail={"by": by, "sha": sha, "pr": rec.pr_number, **(forced or {})},
                )
                break
            except (StaleVersionError, InvalidTransitionError):
                fresh = await registry.get(rec.id)
                if fresh.status is TaskStatus.MERGED:
                    return fresh  # another call or the monitor completed it
                if fresh.status is not TaskStatus.READY or attempt == MERGE_MOVE_ATTEMPTS - 1:
                    raise
                rec = fresh
        repo = Path(rec.repository)
        if rec.worktree_path and rec.host_id in (None, self.runtime.host_id):
            try:
                await g.git(repo, "fetch", "-q", "origin", check=False)
                await self.runtime.cleanup(rec.id, repo, rec.branch, rec.base_branch)
            except Exception:  # merged is merged; `fleet delete` cleans up later
                log.exception("cleanup after merge failed", extra={"task": str(rec.id)})
        return done

    # -- the queue -------------------------------------------------------------------------

    async def drain_queue(self, operator_id: str | None = None) -> list[TaskRecord]:
        """Admit queued spawns while their operators have free slots, oldest first, and start
        them. Returns the tasks started (a task whose start failed is left `failed`)."""
        started: list[TaskRecord] = []
        async with self._drain_lock:
            operators = [operator_id] if operator_id else await self.governor.queued_operators()
            for op in operators:
                while (taken := await self.governor.take_queued(op, self._queued_task)) is not None:
                    entry, rec = taken
                    reason = str(entry.request.get("route", {}).get("reason", "queued"))
                    try:
                        started.append(await self.launcher.launch(rec, reason))
                    except SagaError:
                        log.warning("queued spawn failed to start", extra={"task": str(rec.id)})
        return started

    def _queued_task(self, entry: QueueEntry) -> NewTask:
        task = NewTask.model_validate(entry.request["task"])
        return task.model_copy(update={"host_id": self.runtime.host_id})

    # -- the other verbs -------------------------------------------------------------------

    def registry(self, actor: Actor) -> TaskRegistry:
        return TaskRegistry(self.db, actor.tenant)

    async def show(self, actor: Actor, ref: str) -> TaskRecord:
        return await self.registry(actor).resolve(ref)

    def forge_error(self, rec: TaskRecord) -> str | None:
        """What the task's forge says when it has not answered for several cycles."""
        return self.forges.problems.problem(rec.repository)

    async def status(
        self, actor: Actor, *, statuses: list[TaskStatus] | None = None, limit: int = 50
    ) -> FleetStatusSummary:
        return await self.registry(actor).summary(status=statuses, limit=limit)

    async def stop(self, actor: Actor, ref: str) -> TaskRecord:
        return (await self.stop_task(actor, ref)).task

    async def stop_task(self, actor: Actor, ref: str) -> Stopped:
        """Kill the agent (if it runs here) and move the task to cancelled. Idempotent: a task
        that has already ended (the monitor may have ended it a moment before) stays as it
        is, once no agent of it runs here any more (DESIGN §8)."""
        registry = self.registry(actor)
        rec = await registry.resolve(ref)
        killed = False
        for _ in range(STALE_RETRIES):
            if rec.status in TERMINAL:
                return Stopped(rec, already_ended=True, killed=await self._settle(rec))
            if rec.tmux_session or rec.status in LIVE:
                self._require_local(rec)
                killed = await self.runtime.kill(rec.id) or killed
            try:
                done = await self.moves.move(
                    rec,
                    TaskStatus.CANCELLED,
                    reason="stopped",
                    audit_detail={"by": actor.operator_id},
                )
                break
            except (StaleVersionError, InvalidTransitionError):
                rec = await registry.get(rec.id)  # moved meanwhile: look again
        else:
            raise StaleVersionError(str(rec.id), rec.version, None)
        await self._after_slot_freed(done.operator_id)
        return Stopped(done, already_ended=False, killed=killed)

    async def _settle(self, rec: TaskRecord) -> bool:
        """An ended task whose agent still runs on this host (its end was recorded before the
        process went): kill it. True when there was one."""
        if not rec.tmux_session or rec.host_id not in (None, self.runtime.host_id):
            return False
        if not await self.runtime.is_alive(rec.id):
            return False
        return await self.runtime.kill(rec.id)

    async def delete(self, actor: Actor, ref: str) -> Deleted:
        """Remove a terminal task: its worktree (unpushed or uncommitted work snapshotted
        first), its branch if merged, then its row (the audit trail stays)."""
        registry = self.registry(actor)
        rec = await registry.resolve(ref)
        if rec.status not in TERMINAL:
            raise ActiveTaskDeletionError(str(rec.id), rec.status.value)
        cleanup = None
        if rec.worktree_path:
            self._require_local(rec)
            cleanup = await self.runtime.cleanup(
                rec.id, Path(rec.repository), rec.branch, rec.base_branch
            )
        deleted = await registry.delete(rec.id)
        if rec.host_id in (None, self.runtime.host_id):
            self.runtime.forget_logs(rec.id)
        snapshot = str(cleanup.snapshot_dir) if cleanup and cleanup.snapshot_dir else None
        await self.bus.emit(
            EventType.DELETED, operator_id=rec.operator_id, task_id=rec.id, snapshot=snapshot
        )
        return Deleted(deleted, cleanup)

    async def logs(self, actor: Actor, ref: str, lines: int = 100) -> str:
        if not 1 <= lines <= 1000:
            raise BadInputError("lines", "must be between 1 and 1000")
        rec = await self._with_session(actor, ref)
        try:
            return await self.runtime.logs(rec.id, lines)  # its kept file, after the session too
        except Exception as exc:
            raise NoSessionError(f"task {rec.short_id} has no agent session: {exc}") from None

    async def attach_command(self, actor: Actor, ref: str) -> list[str]:
        """tmux attach to a live agent; an ended one (dead pane, session gone) is refused
        with the task's state and the end of its log."""
        rec = await self._with_session(actor, ref)
        present = await self.runtime.has_agent(rec.id)
        if not present or not await self.runtime.is_alive(rec.id):  # the exit record counts
            raise NoSessionError(await self._nothing_to_attach(rec, gone=not present))
        return self.runtime.attach_command(rec.id)

    async def _nothing_to_attach(self, rec: TaskRecord, *, gone: bool) -> str:
        if not gone:  # its last words may still be on their way to the log file
            await self.runtime.output_settled(rec.id)
        ended = await self.runtime.exit_status(rec.id)
        how = f" (exit {ended.code}{', ' + ended.signal if ended.signal else ''})" if ended else ""
        why = "its agent's session is gone" if gone else f"its agent has ended{how}"
        text = f"task {rec.short_id}: nothing to attach to, {why}; the task {now(rec.status.value)}"
        try:
            tail = await self.runtime.logs(rec.id, ATTACH_TAIL_LINES)
        except Exception:
            tail = ""
        if tail:
            text += f"\nthe end of its log (all of it: fleet logs {rec.short_id}):\n{tail}"
        return text

    async def _with_session(self, actor: Actor, ref: str) -> TaskRecord:
        rec = await self.registry(actor).resolve(ref)
        if not rec.tmux_session:
            raise NoSessionError(f"task {rec.short_id} ({rec.status.value}) never started")
        self._require_local(rec)
        return rec

    def _require_local(self, rec: TaskRecord) -> None:
        if rec.host_id not in (None, self.runtime.host_id):
            raise OtherHostError(str(rec.id), rec.host_id)

    async def _after_slot_freed(self, operator_id: str) -> None:
        self.governor.invalidate(operator_id)
        await self.governor.observe_capacity()
        try:
            await self.drain_queue(operator_id)
        except Exception:  # the queue is retried by every running engine; stopping succeeded
            log.exception("queue drain after a freed slot failed")
