"""The `Runtime` interface: what the conductor, the monitor, attach and logs ask of wherever an
agent runs. Local mode (runtime/local.py: tmux + bubblewrap) and container mode
(runtime/container.py: a hardened container through the Docker Engine API) implement it, and
runtime/modes.py routes each task to the one that holds its agent, so no caller branches on
the mode. Every method after `spawn` names the task only: a runtime finds its agents again
after a restart (tmux sessions and containers are named `fleet-<task id>`)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol
from uuid import UUID

from fleet_core.runtime.cleanup import CleanupResult
from fleet_core.runtime.handles import AgentHandle, ExitStatus, SpawnSpec


class Runtime(Protocol):
    host_id: str

    async def spawn(self, spec: SpawnSpec, *, resume: bool = False) -> AgentHandle:
        """The task's checkout and its agent, started (`started` recorded by the launcher)."""
        ...

    async def respawn(self, spec: SpawnSpec) -> AgentHandle:
        """Another attempt: the old agent goes, the checkout and its work stay."""
        ...

    async def is_alive(self, task_id: UUID) -> bool: ...

    async def alive_tasks(self) -> set[UUID]:
        """The tasks whose agent runs here, in one call (the monitor's cycle)."""
        ...

    async def agent_pid(self, task_id: UUID) -> int | None:
        """The host's pid of the agent's process tree (its CPU time counts as progress) when
        the monitor's cycle has no tmux pane for it: a container's first process. None when
        it has none here (local agents' come from the cycle's panes)."""
        ...

    async def exit_status(self, task_id: UUID) -> ExitStatus | None:
        """The agent's end (code, signal, OOM) once it has ended; None while it runs."""
        ...

    async def list_active(self) -> list[UUID]:
        """The tasks of this host's agent sessions or containers, ended or not (reconcile)."""
        ...

    async def logs(self, task_id: UUID, lines: int = ...) -> str:
        """The last lines of the kept log file (after the agent too)."""
        ...

    def attach_command(self, task_id: UUID) -> list[str]: ...

    async def kill(self, task_id: UUID, grace_s: float | None = None) -> bool:
        """SIGTERM, the grace period, SIGKILL, then the session or container removed."""
        ...

    async def publish(self, repository: Path, task_id: UUID, branch: str) -> bool: ...

    async def cleanup(
        self, task_id: UUID, repository: Path, branch: str, base_branch: str | None = None
    ) -> CleanupResult: ...
