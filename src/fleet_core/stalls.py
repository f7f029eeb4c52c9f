"""Stalls, for the monitor: a running agent with no new commit for `stall_s` since its start or
its last commit on its branch (whichever is later, never the base's) gets one warning per
commit: an event and `stall_warning` stored on the task. A warning only; the agent keeps
running. The branch's tip costs no process unless its ref moved (runtime/heads.py)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from fleet_core.errors import StaleVersionError
from fleet_core.events import EventType
from fleet_core.models import TaskRecord

if TYPE_CHECKING:
    from fleet_core.conductor import Conductor
    from fleet_core.registry import TaskRegistry


class StallWatch:
    def __init__(self, conductor: Conductor, admin: TaskRegistry, stall_s: float) -> None:
        self.c = conductor
        self.admin = admin
        self.stall_s = stall_s
        self.warned: dict[UUID, str] = {}  # task -> the commit its last warning was about

    def forget_ended(self, live: set[UUID]) -> None:
        for task_id in [t for t in self.warned if t not in live]:
            del self.warned[task_id]

    async def check(self, rec: TaskRecord, started: datetime, now: datetime) -> bool:
        """Warn about `rec` if it stalls (once per commit); True when it warned now."""
        if _age(started, now) < self.stall_s or not rec.worktree_path:
            return False
        # The branch's tip, read again only when its ref moved; its time, once per commit.
        last = await self.c.runtime.heads.last_commit(rec.id, Path(rec.worktree_path), rec.branch)
        sha, stamp = last if last is not None else ("", None)
        since = max(started, datetime.fromtimestamp(stamp, UTC)) if stamp is not None else started
        if _age(since, now) < self.stall_s or self.warned.get(rec.id) == sha:
            return False
        self.warned[rec.id] = sha
        minutes = round(_age(since, now) / 60)
        warning = {"since": since.isoformat(), "minutes": minutes, "at": now.isoformat()}
        with contextlib.suppress(StaleVersionError):
            await self.admin.update_metadata(
                rec.id, {"stall_warning": warning}, expected_version=rec.version
            )
        await self.c.bus.emit(
            EventType.STALLED,
            operator_id=rec.operator_id,
            task_id=rec.id,
            minutes=minutes,
            commit=sha,
        )
        return True


def _age(since: datetime, now: datetime) -> float:
    return (now - since).total_seconds()
