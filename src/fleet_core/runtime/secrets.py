"""SecretProvider: each agent gets only its allowlisted variables, and every issuance is
audited by name (never by value).

Where a value comes from, first match wins:
1. the operator's own stored secrets (`fleet secrets set`, encrypted in the database: the same
   on every engine, so a retry on another host gets what the first attempt got);
2. the config's `[secrets]` table (fleet.toml, written by whoever runs the engine);
3. the engine's environment, and only for the local operator (the OS user who runs fleet,
   `settings.operator`): another operator's agent never sees a variable of the engine's
   environment. Fleet's own settings (`FLEET_DATABASE_URL`, `FLEET_KEY_ENCRYPTION_KEY`, ...)
   and the variables the launcher controls are never taken from there.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from uuid import UUID

from fleet_core.audit import record_event
from fleet_core.auth.secret_store import RESERVED_NAMES, SecretStore
from fleet_core.config import ENV_PREFIX, Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.models import AgentType
from fleet_core.runtime.adapters import Adapter

TASK_VARIABLES = ("FLEET_TASK_ID", "FLEET_AGENT_TYPE", "FLEET_ATTEMPT")
# Never read from the engine's environment for an agent, whatever an adapter allowlists.
ENGINE_ONLY = frozenset(
    {"FLEET_CONFIG", *(ENV_PREFIX + name.upper() for name in Settings.model_fields)}
)
UNSAFE_PREFIXES = ("LD_", "DYLD_", "BASH_FUNC_")


def from_environment_allowed(name: str) -> bool:
    """May the local operator's agent take `name` from the engine's environment?"""
    return not (name in ENGINE_ONLY or name in RESERVED_NAMES or name.startswith(UNSAFE_PREFIXES))


class SecretProvider:
    def __init__(
        self,
        db: Database,
        configured: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        *,
        store: SecretStore | None = None,
        local_operator: str | None = None,
    ) -> None:
        """`store`: the operators' stored secrets (None: none are read). `local_operator`: the
        one operator whose agents may take values from `environ` (default os.environ); None:
        nobody's."""
        self.db = db
        self.store = store
        self.configured = dict(configured or {})
        self.environ = environ if environ is not None else os.environ
        self.local_operator = local_operator

    async def ready(self) -> None:
        """Check the master key against the database's now (see SecretStore.ready)."""
        if self.store is not None:
            await self.store.ready()

    async def issue(
        self,
        *,
        task_id: UUID,
        operator_id: str,
        adapter: Adapter,
        attempt: int = 1,
    ) -> dict[str, str]:
        stored = await self.store.values(operator_id, adapter.env) if self.store else {}
        local = operator_id == self.local_operator
        values: dict[str, str] = {}
        missing: list[str] = []
        for name in adapter.env:
            value = stored.get(name, self.configured.get(name))
            if value is None and local and from_environment_allowed(name):
                value = self.environ.get(name)
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
    return {*adapter.env, *TASK_VARIABLES}


__all__ = ["AgentType", "SecretProvider", "allowed_names", "from_environment_allowed"]
