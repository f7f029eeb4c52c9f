"""Merging a ready task's PR through its forge (its Definition of Done checked again), and
completing a task whose PR the forge merged: ready → merged, then its checkout's cleanup."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from fleet_core.errors import InvalidTransitionError, MergeRefusedError, StaleVersionError
from fleet_core.forge.select import ForgeSet
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import CiStatus, TaskRecord, TaskType
from fleet_core.review.dod import check_dod
from fleet_core.runtime import git as g
from fleet_core.task_access import TaskAccess
from fleet_core.transitions import Transitions
from fleet_core.wording import now

if TYPE_CHECKING:
    from fleet_core.conductor import Actor, Conductor

log = logging.getLogger(__name__)
MERGE_MOVE_ATTEMPTS = 5  # a merged PR's task moved again after this many stale rows: give up


class MergeVerbs(TaskAccess):
    """Its state is set by Conductor's __init__."""

    forges: ForgeSet
    moves: Transitions

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
        if rec.pr_number is None and rec.task_type is TaskType.REVIEW:
            # A review task makes no PR: its report is what was asked for, and "merging" it
            # accepts the report (its DoD, the report, held when it became ready).
            await self.require_granted(rec)
            return await self.complete_merge(
                rec, by=actor.operator_id, sha=None, forced={"accepted_report": True}
            )
        if rec.pr_number is None:
            raise MergeRefusedError(f"task {rec.short_id} has no pull request")
        if rec.ci_status is not CiStatus.PASSING:
            state = rec.ci_status.value if rec.ci_status else "unknown"
            raise MergeRefusedError(f"CI of PR #{rec.pr_number} is not passing ({state})")
        await self.require_granted(rec)
        # The Definition of Done again (the base may have moved); `force` merges anyway,
        # audited with what was unmet.
        unmet = [i.line() for i in (await check_dod(cast("Conductor", self), rec)).unmet]
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
