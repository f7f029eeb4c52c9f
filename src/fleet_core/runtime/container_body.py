"""The hardened create body of a container agent (what `docker inspect` reads back), and the
agent's command as its image runs it. Nothing secret goes in: the prompt and the variables
reach the launcher through 0600 files in the mounted run directory."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

from fleet_core.db.sysuser import RunAs
from fleet_core.runtime.container_config import ContainerSettings
from fleet_core.runtime.handles import ExitStatus

RUN_INSIDE = "/run/fleet"
HOME_INSIDE = "/home/agent"
LAUNCHER_INSIDE = "/opt/fleet-launch/launch.py"
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LABEL_TASK = "fleet.task_id"
LABEL_OPERATOR = "fleet.operator"
LABEL_HOST = "fleet.host"


def create_body(
    c: ContainerSettings,
    *,
    image: str,
    task_id: str,
    operator_id: str,
    host_id: str,
    agent_type: str,
    checkout: Path,
    rd: Path,
    home: Path,
    launcher: Path,
    objects: list[Path],
    owner: RunAs,
) -> dict[str, Any]:
    """Non-root user, read-only root, tmpfs /tmp, no capabilities, no-new-privileges, the
    daemon's default seccomp profile, the configured limits and network, fleet's labels; the
    checkout, the HOME and the run directory the only writable binds."""
    binds = [
        f"{checkout}:{checkout}:rw",
        f"{home}:{HOME_INSIDE}:rw",
        f"{rd}:{RUN_INSIDE}:rw",
        f"{launcher}:{LAUNCHER_INSIDE}:ro",
        *(f"{o}:{o}:ro" for o in objects),  # the shared clone's alternates
    ]
    memory = c.memory_mb << 20
    return {
        "Image": image,
        "User": f"{owner.uid}:{owner.gid}",
        "Entrypoint": ["python3", "-S", LAUNCHER_INSIDE],
        "Cmd": [RUN_INSIDE],
        "WorkingDir": str(checkout),
        "Env": [
            f"HOME={HOME_INSIDE}",
            f"PATH={BASE_PATH}",
            "LANG=C.UTF-8",
            "PYTHONUNBUFFERED=1",
            "TMPDIR=/tmp",
        ],
        "Labels": {
            LABEL_TASK: task_id,
            LABEL_OPERATOR: operator_id,
            LABEL_HOST: host_id,
            "fleet.agent_type": agent_type,
        },
        "Tty": False,
        "OpenStdin": False,
        "AttachStdin": False,
        "NetworkDisabled": c.network == "none",
        "HostConfig": {
            "Binds": binds,
            "ReadonlyRootfs": True,
            "Tmpfs": {"/tmp": f"rw,noexec,nosuid,nodev,size={c.tmp_mb}m"},  # noqa: S108
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],  # and the daemon's default seccomp profile
            "Privileged": False,
            "Memory": memory,
            "MemorySwap": memory,  # no swap: the limit is the limit
            "NanoCpus": c.nano_cpus,
            "PidsLimit": c.pids,
            "NetworkMode": c.network,
            "IpcMode": "private",
            "AutoRemove": False,  # kept after the agent ends, until kill (like a pane)
            "RestartPolicy": {"Name": "no"},
        },
    }


def container_argv(argv: list[str]) -> list[str]:
    """The adapter's command as the image runs it: the program by name on the image's PATH
    (fleet's own Python, which runs the demo agent, is the image's python3)."""
    first = argv[0]
    if first == sys.executable or os.path.basename(first).startswith("python"):
        first = "python3"
    else:
        first = os.path.basename(first)
    return [first, *argv[1:]]  # {prompt_file}: the launcher puts the path inside in its place


def exit_from_state(state: dict[str, Any]) -> ExitStatus:
    """A container's end from its inspected State: OOMKilled is exit 137 (class `oom`)."""
    finished = str(state.get("FinishedAt") or "")
    try:
        ended: datetime | None = datetime.fromisoformat(finished[:26].rstrip("Z") + "+00:00")
    except ValueError:
        ended = None
    code = 137 if state.get("OOMKilled") else int(state.get("ExitCode", -1))
    error = str(state.get("Error") or "") or None
    return ExitStatus(code, "SIGKILL" if state.get("OOMKilled") else None, ended, error)
