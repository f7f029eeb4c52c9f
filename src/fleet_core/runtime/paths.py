"""Where a runtime keeps its files under the data dir, and the agents' persistent HOMEs."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from fleet_core.config import Settings
from fleet_core.db.sysuser import RunAs
from fleet_core.models import AgentType
from fleet_core.runtime.validation import path_under


@dataclass(frozen=True)
class RuntimePaths:
    data_dir: Path
    worktrees: Path

    @classmethod
    def under(cls, data_dir: Path, worktrees: Path | None = None) -> RuntimePaths:
        return cls(data_dir, worktrees or data_dir / "worktrees")

    @classmethod
    def from_settings(cls, settings: Settings) -> RuntimePaths:
        return cls.under(settings.data_dir, settings.worktree_dir)

    @property
    def runs(self) -> Path:
        return self.data_dir / "run"

    @property
    def snapshots(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def agent_logs(self) -> Path:
        """Each agent's output (`<task id>.log`, rotated to `.log.1`), kept past its session."""
        return self.data_dir / "agent-logs"

    @property
    def homes(self) -> Path:
        """Agents' persistent HOMEs, one per operator and agent type (their CLIs' logins)."""
        return self.data_dir / "homes"

    @property
    def tmux_socket(self) -> str:
        return "fleet-" + hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]


def agent_home(paths: RuntimePaths, operator_id: str, agent: AgentType, owner: RunAs) -> Path:
    """The operator's persistent HOME for one agent type (its CLI's login), made on first use
    and owned by the agent user."""
    home = path_under(paths.homes, operator_id, field="operator_id") / agent.value
    if not home.is_dir():
        home.mkdir(parents=True, mode=0o700)
        if owner.uid is not None:
            os.chown(home, owner.uid, owner.gid or 0)
    return home
