"""Memory and process-count limits for one local agent: a cgroup (v1 `memory` and `pids`
controllers, or v2 with both) per task, under fleet's own cgroup, made by the engine (root);
the launcher joins it before it starts the agent, so every process of the agent counts.

`prlimit --nproc` counts per uid (all agents share the agent user), and an address-space
limit makes Node-based CLIs abort at start: cgroups are the one way that bounds one agent.
Where the machine has no writable cgroup controller, agents run without these limits and the
engine says so once in its log."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

log = logging.getLogger(__name__)
ROOT = Path("/sys/fs/cgroup")
_warned: set[str] = set()


@dataclass(frozen=True)
class AgentLimits:
    memory_mb: int | None = None
    pids: int | None = None

    @property
    def any(self) -> bool:
        return self.memory_mb is not None or self.pids is not None


def _own(controller: str) -> Path | None:
    """This process's cgroup directory for a v1 controller (its own group, so limits nest)."""
    base = ROOT / controller
    if not (base / "cgroup.procs").exists():
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return base / path.lstrip("/")
    return base


def create(task_id: UUID, limits: AgentLimits) -> list[Path]:
    """The task's cgroup directories with their limits set (the `cgroup.procs` files to
    join); [] when limits are not set or the machine cannot apply them."""
    wanted = []
    if limits.memory_mb is not None:
        wanted.append(("memory", "memory.limit_in_bytes", str(limits.memory_mb * 1024 * 1024)))
    if limits.pids is not None:
        wanted.append(("pids", "pids.max", str(limits.pids)))
    made: list[Path] = []
    for controller, knob, value in wanted:
        parent = _own(controller)
        if parent is None:
            _warn(controller, "no cgroup v1 controller mounted at /sys/fs/cgroup")
            continue
        group = parent / "fleet" / str(task_id)
        try:
            group.mkdir(parents=True, exist_ok=True)
            (group / knob).write_text(value)
            if controller == "memory":  # no swap beyond the limit, where the kernel has it
                swap = group / "memory.memsw.limit_in_bytes"
                if swap.exists():
                    swap.write_text(value)
        except OSError as exc:
            _warn(controller, str(exc))
            continue
        made.append(group / "cgroup.procs")
    return made


def remove(task_id: UUID) -> None:
    """Remove the task's groups (they are empty once the agent and its launcher ended)."""
    for controller in ("memory", "pids"):
        parent = _own(controller)
        if parent is None:
            continue
        group = parent / "fleet" / str(task_id)
        if group.is_dir():
            try:
                os.rmdir(group)
            except OSError as exc:
                log.warning("cannot remove cgroup %s: %s", group, exc)


def _warn(controller: str, why: str) -> None:
    if controller not in _warned:
        _warned.add(controller)
        log.warning("agents run without a %s limit: %s", controller, why)
