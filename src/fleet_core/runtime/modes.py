"""The runtime the conductor holds: local mode (tmux, runtime/local.py) for every task, and
container mode (runtime/container.py) for the tasks whose `runtime` is `container`.

Both implement the same `Runtime` interface (runtime/base.py), so the conductor, the monitor,
attach and logs never ask which mode a task runs in: every call that names a task goes to the
runtime that holds its agent. A spawn goes where its spec says (the task's `runtime`, decided
by the conductor: the spawn's choice, else the agent type's, the repository's, the global
setting); afterwards a task's mode is known from its run directory (container mode leaves a
marker there), so it survives a restart of the engine. The container runtime is made only when
a container task needs it: a machine without Docker runs local mode as before.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

from fleet_core.errors import BadInputError, SpawnError
from fleet_core.models import AgentType
from fleet_core.runtime.base import Runtime
from fleet_core.runtime.cleanup import CleanupResult
from fleet_core.runtime.container import MARKER, ContainerRuntime
from fleet_core.runtime.container_config import ContainerSettings
from fleet_core.runtime.docker_client import DockerUnavailableError
from fleet_core.runtime.handles import (
    DEFAULT_LOG_LINES,
    AgentHandle,
    ExitStatus,
    SpawnSpec,
    session_name,
)
from fleet_core.runtime.local import LocalRuntime
from fleet_core.runtime.tmux import PaneState

MODES = ("local", "container")


class Runtimes(LocalRuntime):
    """Local mode itself, plus a container runtime sharing its paths, adapters and secrets."""

    def __init__(
        self, *args: Any, container: ContainerSettings | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.container = ContainerRuntime(*args, container=container, **kwargs)
        # Container mode is configured (globally or for an agent type): the daemon's
        # containers are listed (reconcile, liveness) even before this engine started one.
        self.expect_containers = False

    # -- which runtime ------------------------------------------------------------------------

    def mode_of(self, task_id: UUID) -> str:
        return "container" if (self.run_dir(task_id) / MARKER).exists() else "local"

    def _for(self, task_id: UUID) -> LocalRuntime:
        return self.container if self.mode_of(task_id) == "container" else self._local

    @property
    def _local(self) -> LocalRuntime:
        return super()  # type: ignore[return-value]

    def _by_mode(self, mode: str) -> LocalRuntime:
        if mode not in MODES:
            raise BadInputError("runtime", f"must be local or container, not {mode!r}")
        return self.container if mode == "container" else self._local

    async def require_runtime(self, mode: str, agent: AgentType) -> None:
        """The agent can start in `mode` here: its binary on PATH (local), a daemon that
        answers (container). A clear error before anything is written."""
        if mode == "container":
            if agent not in self.adapters:
                raise BadInputError("agent_type", f"no command configured for {agent.value}")
            try:
                await self.container.require_image(agent)
            except DockerUnavailableError as exc:
                raise SpawnError("docker", f"container mode: {exc}") from None
            return
        self._by_mode(mode)
        self.require_installed(agent)

    async def health(self, *, always: bool = False) -> str | None:
        """The container daemon's line when it does not answer (None: fine), asked once
        container mode is configured (`always`) or has been used."""
        if not (always or self.container.daemon.current is not None or self._container_tasks()):
            return None
        return await self.container.health()

    # -- the interface, routed ----------------------------------------------------------------

    async def spawn(self, spec: SpawnSpec, *, resume: bool = False) -> AgentHandle:
        runtime = self._by_mode(spec.runtime)
        if runtime is self.container:
            return await self.container.spawn(spec, resume=resume)
        return await super().spawn(spec, resume=resume)

    async def respawn(self, spec: SpawnSpec) -> AgentHandle:
        if self._by_mode(spec.runtime) is self.container:
            return await self.container.respawn(spec)
        return await super().respawn(spec)

    async def exit_status(self, task_id: UUID) -> ExitStatus | None:
        if self.mode_of(task_id) == "container":
            return await self.container.exit_status(task_id)
        return await super().exit_status(task_id)

    async def is_alive(self, task_id: UUID) -> bool:
        if self.mode_of(task_id) == "container":
            return await self.container.is_alive(task_id)
        return await super().is_alive(task_id)

    async def agent_pid(self, task_id: UUID) -> int | None:
        if self.mode_of(task_id) == "container":
            return await self.container.agent_pid(task_id)
        return await super().agent_pid(task_id)

    async def alive_tasks(self, panes: dict[UUID, PaneState] | None = None) -> set[UUID]:
        alive = await super().alive_tasks(panes)
        if self.container.daemon.current is not None or self._container_tasks():
            alive |= await self.container.alive_tasks()
        return alive

    async def list_active(self) -> list[UUID]:
        active = await super().list_active()
        if self.container.daemon.current is not None or self._container_tasks():
            active += await self.container.list_active()
        return active

    def _container_tasks(self) -> bool:
        """Container mode is configured, or run directories of container tasks exist (an
        engine restarted beside them)."""
        if self.expect_containers:
            return True
        runs = self.paths.runs
        return runs.is_dir() and any((d / MARKER).exists() for d in runs.iterdir())

    async def logs(self, task_id: UUID, lines: int = DEFAULT_LOG_LINES) -> str:
        if self.mode_of(task_id) == "container":
            return await self.container.logs(task_id, lines)
        return await super().logs(task_id, lines)

    def attach_command(self, task_id: UUID) -> list[str]:
        if self.mode_of(task_id) == "container":
            return self.container.attach_command(task_id)
        return super().attach_command(task_id)

    async def has_agent(self, task_id: UUID) -> bool:
        """The agent's session (or container) exists, running or ended."""
        if self.mode_of(task_id) == "container":
            return await self.container.has_agent(task_id)
        return await self.tmux.pane(session_name(task_id)) is not None

    async def kill(self, task_id: UUID, grace_s: float | None = None) -> bool:
        if self.mode_of(task_id) == "container":
            return await self.container.kill(task_id, grace_s)
        return await super().kill(task_id, grace_s)

    async def cleanup(
        self, task_id: UUID, repository: Path, branch: str, base_branch: str | None = None
    ) -> CleanupResult:
        if self.mode_of(task_id) == "container":
            await self.container.kill(task_id)
        return await super().cleanup(task_id, repository, branch, base_branch)

    async def close(self) -> None:
        await self.container.close()


def _implementations(local: LocalRuntime, container: ContainerRuntime, routed: Runtimes) -> None:
    """mypy checks here that all three implement the Runtime interface."""
    checked: list[Runtime] = [local, container, routed]
    del checked
