"""SecretProvider: each agent gets only its allowlisted variables, and every issuance is
audited by name (never by value)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from uuid import UUID

from fleet_core.audit import record_event
from fleet_core.db.database import Database, Tenant
from fleet_core.models import AgentType
from fleet_core.runtime.adapters import Adapter


class SecretProvider:
    def __init__(
        self,
        db: Database,
        configured: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.db = db
        self.configured = dict(configured or {})  # config wins over the environment
        self.environ = environ if environ is not None else os.environ

    async def issue(
        self,
        *,
        task_id: UUID,
        operator_id: str,
        adapter: Adapter,
        attempt: int = 1,
    ) -> dict[str, str]:
        values: dict[str, str] = {}
        missing: list[str] = []
        for name in adapter.env:
            value = self.configured.get(name, self.environ.get(name))
            if value is None:
                missing.append(name)
            else:
                values[name] = value
        values["FLEET_TASK_ID"] = str(task_id)
        values["FLEET_AGENT_TYPE"] = adapter.agent_type.value
        values["FLEET_ATTEMPT"] = str(attempt)
        async with self.db.tx(Tenant.operator(operator_id)) as conn:
            await record_event(
                conn,
                operator_id=operator_id,
                event_type="fleet.secrets_issued",
                task_id=task_id,
                detail={
                    "agent_type": adapter.agent_type.value,
                    "names": sorted(values),
                    "missing": missing,
                },
            )
        return values


def allowed_names(adapter: Adapter) -> set[str]:
    return {*adapter.env, "FLEET_TASK_ID", "FLEET_AGENT_TYPE", "FLEET_ATTEMPT"}


__all__ = ["AgentType", "SecretProvider", "allowed_names"]
