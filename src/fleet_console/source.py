"""What the console's screens read, in one place: the running engine's public API, acting as
the local operator. Screens never reach into the engine's parts themselves."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from uuid import UUID

from fleet_core.audit import audit_trail
from fleet_core.conductor import Actor, Conductor
from fleet_core.engine import Engine
from fleet_core.models import TaskRecord
from fleet_core.overview import Overview, fleet_overview


class EngineSource:
    def __init__(self, engine: Engine, actor: Actor) -> None:
        self.engine = engine
        self.actor = actor

    @property
    def conductor(self) -> Conductor:
        return self.engine.conductor

    async def tasks(self, limit: int = 1000) -> list[TaskRecord]:
        """Every unfinished task (however many: none may go unseen) and the newest `limit`."""
        registry = self.engine.conductor.registry(self.actor)
        newest = await registry.query(limit=limit)
        live = await registry.list_live()
        return list({t.id: t for t in [*newest, *live]}.values())

    async def task(self, task_id: UUID | str) -> TaskRecord | None:
        return await self.engine.conductor.registry(self.actor).find(task_id)

    async def logs(self, task_id: UUID | str, lines: int = 1000) -> str:
        """The agent's terminal (tmux capture); raises NoSessionError when there is none."""
        return await self.engine.conductor.logs(self.actor, str(task_id), lines)

    async def audit(self, task_id: UUID) -> list[dict[str, Any]]:
        return await audit_trail(self.engine.db, self.actor.tenant, task_id)

    async def deliveries(self, task_id: UUID) -> list[dict[str, Any]]:
        """The task's notification record: per event and channel."""
        from fleet_core.notify.status import task_deliveries

        return await task_deliveries(self.engine.db, self.actor.tenant, task_id)

    async def overview(self) -> Overview:
        ov = await fleet_overview(self.engine.conductor, self.actor, self.engine.monitor)
        if self.engine.serving.startswith("client"):  # the monitor runs in another process
            ov = replace(ov, monitor={"elsewhere": self.engine.serving})
        return ov
