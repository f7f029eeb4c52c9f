"""ConductorEngine: the operator verbs (spawn, stop, delete, retry, merge, logs, attach,
status, show) on top of the governor, the router, the spawn saga, the runtime, the forges and
the registry, plus the loop that admits queued spawns.

A spawn is validated, routed and admitted (or queued) here, then started by the spawn saga
(spawn_saga.py): the task row always exists before any process starts (INV-015). The other
verbs are the Conductor's through its parts: task_verbs.py (retry, stop, delete),
session_verbs.py (logs, attach), merging.py (merge), task_access.py (which task an actor
reaches).
"""

from __future__ import annotations

import asyncio
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
    SpawnDeniedError,
)
from fleet_core.events import EventBus, EventType
from fleet_core.forge.select import ForgeSet
from fleet_core.governor import DEFAULT_TIER_LIMITS, Governor, Limits
from fleet_core.lifecycle import TaskStatus
from fleet_core.merging import MergeVerbs
from fleet_core.models import (
    AgentType,
    FleetStatusSummary,
    NewTask,
    RuntimeMode,
    SpawnRequest,
    TaskRecord,
    Tier,
)
from fleet_core.repositories import Repositories
from fleet_core.retry import RetryEngine, RetryPolicy
from fleet_core.review.dod import parse_dod
from fleet_core.review.pipeline import ReviewPipeline
from fleet_core.review.reputation import RouteScores
from fleet_core.review.settings import ReviewSettings, review_settings
from fleet_core.router import ModelRouter, Route
from fleet_core.runtime import git as g
from fleet_core.runtime.adapters import build_adapters
from fleet_core.runtime.limits import AgentLimits
from fleet_core.runtime.modes import Runtimes
from fleet_core.runtime.paths import RuntimePaths
from fleet_core.runtime.policy import sandbox_for
from fleet_core.runtime.repo_config import RepoConfig, load_repo_config
from fleet_core.runtime.sandbox import SandboxMode
from fleet_core.runtime.secrets import SecretProvider
from fleet_core.runtime.validation import validate_branch
from fleet_core.saga import SagaError
from fleet_core.session_verbs import SessionVerbs
from fleet_core.spawn_queue import Queued, QueueEntry
from fleet_core.spawn_saga import SpawnSaga
from fleet_core.task_verbs import TaskVerbs
from fleet_core.tasks import stop_task
from fleet_core.transitions import Transitions

log = logging.getLogger(__name__)


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


def branch_name(description: str, task_id: UUID) -> str:
    words = re.findall(r"[a-z0-9]+", description.lower())[:6]
    slug = "-".join(words)[:40].strip("-") or "task"
    return f"fleet/{slug}-{str(task_id)[:8]}"


class Conductor(TaskVerbs, SessionVerbs, MergeVerbs):
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
        loop, self._loop = self._loop, None
        await stop_task(loop)
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

    def forge_error(self, rec: TaskRecord) -> str | None:
        """What the task's forge says when it has not answered for several cycles."""
        return self.forges.problems.problem(rec.repository)

    async def status(
        self, actor: Actor, *, statuses: list[TaskStatus] | None = None, limit: int = 50
    ) -> FleetStatusSummary:
        return await self.registry(actor).summary(status=statuses, limit=limit)

    async def _after_slot_freed(self, operator_id: str) -> None:
        self.governor.invalidate(operator_id)
        await self.governor.observe_capacity()
        try:
            await self.drain_queue(operator_id)
        except Exception:  # the queue is retried by every running engine; stopping succeeded
            log.exception("queue drain after a freed slot failed")
