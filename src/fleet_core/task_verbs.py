"""The verbs on one task that end or remove it, or start it again: retry (with the operator's
note), stop, delete."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fleet_core.errors import (
    ActiveTaskDeletionError,
    BadInputError,
    InvalidTransitionError,
    StaleVersionError,
)
from fleet_core.events import EventBus, EventType
from fleet_core.lifecycle import LIVE, TERMINAL, TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.retry import RetryEngine
from fleet_core.runtime.cleanup import CleanupResult
from fleet_core.spawn_saga import STALE_RETRIES
from fleet_core.task_access import TaskAccess
from fleet_core.transitions import Transitions

if TYPE_CHECKING:
    from fleet_core.conductor import Actor

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


@dataclass(frozen=True)
class Stopped:
    """What `stop` did: `task` as it is now; `already_ended` when it had ended before (its
    status is the one it ended with); `killed` when an agent process was stopped."""

    task: TaskRecord
    already_ended: bool
    killed: bool


@dataclass(frozen=True)
class Deleted:
    task: TaskRecord
    cleanup: CleanupResult | None


class TaskVerbs(TaskAccess):
    """Its state is set by Conductor's __init__."""

    bus: EventBus
    moves: Transitions
    retries: RetryEngine

    if TYPE_CHECKING:

        async def _after_slot_freed(self, operator_id: str) -> None: ...

    async def retry(self, actor: Actor, ref: str, *, note: str | None = None) -> TaskRecord:
        """Retry a failed or rejected task now (same rules as the automatic retries); `note`
        goes into the next attempt's prompt."""
        note = check_note(note)
        rec = await self.registry(actor).resolve(ref)
        self._require_local(rec)
        return await self.retries.retry(rec, tier=actor.tier, note=note)

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
