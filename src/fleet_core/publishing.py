"""Publishing, for the monitor: the agent commits, the engine pushes each running task's new
commits to its repository's origin (before the forges are asked about them), and opens the PR
of an agent that ended well where the forge wants one opened (GitHub); agents never do.

What a push failure said is kept per task until the task ends: a branch that could not be
pushed makes the agent's end `push_failed` rather than "no PR".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from fleet_core.forge.base import ForgeError, PullRequest
from fleet_core.models import TaskRecord
from fleet_core.runtime import git as g

if TYPE_CHECKING:
    from fleet_core.conductor import Conductor

log = logging.getLogger(__name__)

PUBLISH_PARALLEL = 8
PR_TITLE_CHARS = 72


class Publisher:
    def __init__(self, conductor: Conductor) -> None:
        self.c = conductor
        self.errors: dict[UUID, str] = {}  # running tasks whose last push failed

    def forget_ended(self, live: set[UUID]) -> None:
        for task_id in [t for t in self.errors if t not in live]:
            del self.errors[task_id]

    async def push(self, running: list[TaskRecord], on_error: Callable[[str], None]) -> None:
        """Each running task's new commits to its repository's origin; a failure is kept (and
        told to `on_error`), a success clears the task's earlier one."""
        gate = asyncio.Semaphore(PUBLISH_PARALLEL)

        async def one(rec: TaskRecord) -> None:
            async with gate:
                try:
                    await self.c.runtime.publish(Path(rec.repository), rec.id, rec.branch)
                    self.errors.pop(rec.id, None)
                except Exception as exc:
                    self.errors[rec.id] = str(exc)[-2000:]
                    on_error(f"task {rec.short_id}: push failed: {exc}")

        await asyncio.gather(*(one(rec) for rec in running))

    async def open_pr(self, rec: TaskRecord) -> PullRequest | None:
        """A PR for the branch of an agent that ended well, where the forge wants one opened.
        None when it cannot (nothing committed, the forge refused: judged as no PR)."""
        repo = Path(rec.repository)
        try:
            forge = await self.c.forges.for_repo(repo)
            base = rec.base_branch or await g.default_branch(repo)
            title = rec.description.strip().splitlines()[0][:PR_TITLE_CHARS] or rec.branch
            who = f"{rec.agent_type.value}, {rec.model}, attempt {rec.retry_count + 1}"
            body = f"{rec.description.strip()}\n\n---\nOpened by fleet for task {rec.id} ({who})."
            return await forge.open_pr(repo, rec.branch, base, title, body)
        except (ForgeError, OSError) as exc:
            log.warning("could not open a PR", extra={"task": str(rec.id), "error": str(exc)})
            return None
