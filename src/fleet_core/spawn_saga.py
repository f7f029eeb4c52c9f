"""The spawn saga (DESIGN §3, INV-015): from a task row that exists (admitted at `proposed`, or
moved to `retrying`) to an agent running in tmux, each step with its compensation.

Steps: the row (already there) → the prompt (enrichment, SHA-256 stored) → `spawning` → the
runtime starts the agent → `running` with the runtime's handle. When a step fails, the steps
that completed are undone in reverse: the agent killed and its worktree removed (a retry keeps
its worktree and branch), the row moved to `failed` with the failing step and what each
compensation did, or `cancelled` if it never left `proposed`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleet_core.db.database import Database, Tenant
from fleet_core.enrichment import (
    DEFAULT_BUDGET,
    EnrichedPrompt,
    build_prompt,
    repository_summary,
    task_sections,
)
from fleet_core.errors import InvalidTransitionError, SpawnError, StaleVersionError
from fleet_core.events import EventType
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.registry import TaskRegistry
from fleet_core.router import ModelRouter
from fleet_core.runtime.handles import AgentHandle, SpawnSpec
from fleet_core.runtime.local import LocalRuntime
from fleet_core.runtime.repo_config import load_repo_config
from fleet_core.saga import Failure, Saga, SagaError
from fleet_core.transitions import Transitions
from fleet_core.ttl_cache import TtlCache

SUMMARY_TTL_S = 30.0
SUMMARY_MAX_REPOS = 64  # repository summaries kept at once (each expires after SUMMARY_TTL_S)
STALE_RETRIES = 5


class SpawnSaga:
    def __init__(
        self,
        db: Database,
        runtime: LocalRuntime,
        router: ModelRouter,
        moves: Transitions,
        *,
        repos: dict[str, dict[str, Any]],
    ) -> None:
        self.db = db
        self.runtime = runtime
        self.router = router
        self.moves = moves
        self.repos = repos
        self.summaries: TtlCache[Path, str] = TtlCache(
            ttl_s=SUMMARY_TTL_S, max_entries=SUMMARY_MAX_REPOS
        )

    async def launch(
        self, rec: TaskRecord, route_reason: str, *, budget: int = DEFAULT_BUDGET
    ) -> TaskRecord:
        """The saga from an admitted (`proposed`) or `retrying` task to `running`. A retry
        reuses the task's worktree and branch and compensates without removing them."""
        registry = TaskRegistry(self.db, Tenant.operator(rec.operator_id))
        retry = rec.status is TaskStatus.RETRYING
        saga = Saga(f"spawn {rec.id}")

        async def admitted() -> TaskRecord:
            return rec  # the gate (or the retry engine) already put it there

        async def cancel_if_proposed(row: TaskRecord, failure: Failure) -> None:
            cur = await registry.get(row.id)
            if cur.status is TaskStatus.PROPOSED:
                await self.moves.move(
                    cur,
                    TaskStatus.CANCELLED,
                    reason="spawn_failed",
                    update={"failure_context": _failure_context(failure)},
                    audit_detail={"step": failure.step},
                )

        async def mark_spawning() -> TaskRecord:
            return await self.moves.move(
                rec, TaskStatus.SPAWNING, update={"prompt_hash": prompt.prompt_hash}
            )

        async def fail_spawning(row: TaskRecord, failure: Failure) -> None:
            await self._fail(registry, row, _failure_context(failure))

        async def kill_and_clean(handle: AgentHandle, failure: Failure) -> None:
            if retry:  # keep the worktree and the previous attempts' work
                await self.runtime.kill(rec.id)
                return
            await self.runtime.cleanup(rec.id, Path(rec.repository), rec.branch, rec.base_branch)

        async def mark_running() -> TaskRecord:
            return await self.moves.move(
                spawning,
                TaskStatus.RUNNING,
                update={
                    "tmux_session": handle.session,
                    "worktree_path": str(handle.worktree_path),
                    "host_id": handle.host_id,
                    "spawned_at": datetime.now(UTC),
                    "sandbox": handle.sandbox,
                },
            )

        try:
            await saga.step("admit", admitted, cancel_if_proposed)
            prompt = await saga.step("enrich", lambda: self._prompt(rec, budget))
            spawning = await saga.step("mark_spawning", mark_spawning, fail_spawning)
            handle = await saga.step(
                "runtime", lambda: self._start_agent(rec, prompt, retry), kill_and_clean
            )
            running = await saga.step("mark_running", mark_running)
        except SagaError as exc:
            exc.task_id = str(rec.id)
            if isinstance(exc.cause, SpawnError) and exc.cause.step == "process":
                self.router.record_failure(rec.model)
            await self.moves.bus.emit(
                EventType.SPAWN_FAILED,
                operator_id=rec.operator_id,
                task_id=rec.id,
                step=exc.step,
                error=str(exc.cause),
            )
            raise
        self.router.record_success(rec.model)
        await self.moves.bus.emit(
            EventType.SPAWNED,
            operator_id=rec.operator_id,
            task_id=rec.id,
            agent_type=rec.agent_type.value,
            model=rec.model,
            branch=rec.branch,
            routing_reason=route_reason,
        )
        return running

    async def _fail(self, registry: TaskRegistry, row: TaskRecord, context: dict[str, Any]) -> None:
        """spawning → failed, re-reading on a version race; a task that meanwhile left
        `spawning` (cancelled by the operator, say) is left where it is."""
        for _ in range(STALE_RETRIES):
            try:
                await self.moves.move(
                    row,
                    TaskStatus.FAILED,
                    reason="spawn_failed",
                    update={"failure_context": context},
                )
                return
            except StaleVersionError:
                row = await registry.get(row.id)
            except InvalidTransitionError:
                return

    async def _start_agent(
        self, rec: TaskRecord, prompt: EnrichedPrompt, retry: bool
    ) -> AgentHandle:
        config = load_repo_config(Path(rec.repository), self.repos)
        spec = SpawnSpec(
            task_id=rec.id,
            operator_id=rec.operator_id,
            repository=Path(rec.repository),
            branch=rec.branch,
            agent_type=rec.agent_type,
            model=rec.model,
            prompt=prompt.prompt,
            base_branch=rec.base_branch or config.base,
            attempt=rec.retry_count + 1,
            setup=config.setup,
            setup_timeout_s=config.setup_timeout_seconds,
            sandbox=rec.sandbox,
            quoted=tuple(str((rec.failure_context or {}).get("log_tail") or "").splitlines()),
            runtime=rec.runtime,
        )
        if retry:
            return await self.runtime.respawn(spec)
        return await self.runtime.spawn(spec)

    async def _prompt(self, rec: TaskRecord, budget: int = DEFAULT_BUDGET) -> EnrichedPrompt:
        repo = Path(rec.repository)
        summary = self.summaries.get(repo)
        if summary is None:
            summary = await repository_summary(repo)
            self.summaries.put(repo, summary)
        sections = task_sections(
            description=rec.description,
            task_type=rec.task_type,
            repository=rec.repository,
            base_branch=rec.base_branch,
            branch=rec.branch,
            repo_summary=summary,
            context_overrides=rec.context_overrides,
            failure=rec.failure_context if rec.retry_count else None,
            worktree=self.runtime.paths.worktrees / str(rec.id),
        )
        return build_prompt(sections, budget)


def _failure_context(failure: Failure) -> dict[str, Any]:
    doc = {"reason": "spawn_failed", **failure.to_dict()}
    if isinstance(failure.error, SpawnError):
        doc["runtime_step"] = failure.error.step
        if failure.error.step == "not_installed":  # not retried until the operator installs it
            doc["reason"] = "agent_not_installed"
            doc["message"] = str(failure.error)
            doc["hint"] = "install the agent's CLI on the engine's PATH, then `fleet retry`"
        if failure.error.output:
            doc["output"] = failure.error.output[-2000:]
    return doc
