"""Which task an actor reaches, and whether it may be acted on here: the actor's registry (its
tenant), the task's host, its repository's grant. The conductor's verbs share it (conductor.py,
task_verbs.py, session_verbs.py, merging.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet_core.db.database import Database, Tenant
from fleet_core.errors import OtherHostError
from fleet_core.models import TaskRecord
from fleet_core.registry import TaskRegistry
from fleet_core.repositories import Repositories
from fleet_core.runtime.modes import Runtimes

if TYPE_CHECKING:
    from fleet_core.conductor import Actor


class TaskAccess:
    """Its state is set by Conductor's __init__."""

    db: Database
    runtime: Runtimes
    repositories: Repositories

    def registry(self, actor: Actor) -> TaskRegistry:
        return TaskRegistry(self.db, actor.tenant)

    async def show(self, actor: Actor, ref: str) -> TaskRecord:
        return await self.registry(actor).resolve(ref)

    async def require_granted(self, rec: TaskRecord) -> None:
        """The task's repository is still granted to the task's operator (a revoked or
        removed repository takes no more merges or retries)."""
        await self.repositories.resolve(Tenant.operator(rec.operator_id), rec.repository)

    def _require_local(self, rec: TaskRecord) -> None:
        if rec.host_id not in (None, self.runtime.host_id):
            raise OtherHostError(str(rec.id), rec.host_id)
