"""The Docker Engine API calls on one task's container (by its name, `fleet-<task id>`) and on
this host's containers (by label): create and start, inspect, list, logs, stop, remove. Each
goes through the Daemon (docker_client.py), which says when the daemon does not answer."""

from __future__ import annotations

import json
import logging
from typing import Any
from uuid import UUID

import aiodocker
import aiohttp

from fleet_core.errors import SpawnError
from fleet_core.models import AgentType
from fleet_core.runtime import agent_log
from fleet_core.runtime.container_body import LABEL_HOST, LABEL_TASK
from fleet_core.runtime.docker_client import Daemon, DockerUnavailableError
from fleet_core.runtime.handles import task_of

log = logging.getLogger(__name__)


async def create_and_start(
    daemon: Daemon, name: str, body: dict[str, Any], agent: AgentType
) -> None:
    """The container, created from `body` and started; SpawnError when it cannot be (a
    container that was created but did not start is removed again)."""
    try:
        created = await daemon.call(
            "create the container",
            lambda d: d._query_json("containers/create", "POST", params={"name": name}, data=body),
        )
    except DockerUnavailableError as exc:
        raise SpawnError("docker", str(exc)) from None
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            raise SpawnError(
                "image",
                f"image {body['Image']} does not exist on {daemon.host}: build it with "
                f"`fleet image build --agent {agent.value}`",
            ) from None
        raise SpawnError("docker", f"the daemon refused the container: {exc.message}") from None
    for warning in created.get("Warnings") or []:
        log.warning("docker: %s", warning, extra={"container": name})
    try:
        await daemon.call(
            "start the container",
            lambda d: d._query_json(f"containers/{name}/start", "POST"),
        )
    except (DockerUnavailableError, aiodocker.DockerError) as exc:
        msg = exc.message if isinstance(exc, aiodocker.DockerError) else str(exc)
        await remove(daemon, name)
        raise SpawnError("process", f"the container did not start: {msg}") from None


async def inspect(daemon: Daemon, name: str) -> dict[str, Any] | None:
    """The container's inspect document; None when there is no such container."""
    try:
        doc: dict[str, Any] = await daemon.call(
            "inspect", lambda d: d._query_json(f"containers/{name}/json")
        )
    except aiodocker.DockerError as exc:
        if exc.status == 404:
            return None
        raise
    return doc


async def state(daemon: Daemon, name: str) -> dict[str, Any] | None:
    """The container's State (inspect); None when there is no such container."""
    doc = await inspect(daemon, name)
    if doc is None:
        return None
    found: dict[str, Any] = doc.get("State") or {}
    return found


async def host_tasks(daemon: Daemon, host_id: str, *, running_only: bool) -> list[UUID]:
    """The tasks of the containers labelled with this host (running ones only, if asked)."""
    filters = {"label": [f"{LABEL_HOST}={host_id}"]}
    if running_only:
        filters["status"] = ["running"]
    rows = await daemon.call(
        "list containers",
        lambda d: d._query_json(
            "containers/json", params={"all": "1", "filters": json.dumps(filters)}
        ),
    )
    ids = []
    for row in rows:
        label = str((row.get("Labels") or {}).get(LABEL_TASK) or "")
        task_id = task_of(f"fleet-{label}")
        if task_id is not None:
            ids.append(task_id)
    return ids


async def output_tail(daemon: Daemon, name: str, lines: int) -> str:
    """The container's last `lines` readable lines of output, from the daemon's log (a line
    saying why when there is none)."""
    try:
        chunks = await daemon.call(
            "logs",
            lambda d: d.containers.container(name).log(stdout=True, stderr=True, tail=str(lines)),
        )
    except (aiodocker.DockerError, DockerUnavailableError) as exc:
        return f"(no log: {exc})"
    text = "".join(chunks)
    return "\n".join(agent_log.readable(text.encode())[-lines:])


async def stop(daemon: Daemon, name: str, grace_s: float) -> None:
    """SIGTERM, then SIGKILL after the grace period (in whole seconds, rounded up); a
    container stopped or gone already is no error."""
    t = max(0, int(-(-grace_s // 1)))
    try:
        await daemon.call(
            "stop",
            lambda d: d._query_json(
                f"containers/{name}/stop",
                "POST",
                params={"t": str(t)},
                timeout=aiohttp.ClientTimeout(total=t + 30),
            ),
        )
    except aiodocker.DockerError as exc:
        if exc.status not in (304, 404):
            raise


async def remove(daemon: Daemon, name: str) -> None:
    """The container and its anonymous volumes, forced; a container gone already is fine."""
    try:
        await daemon.call(
            "remove",
            lambda d: d._query_json(
                f"containers/{name}", "DELETE", params={"force": "1", "v": "1"}
            ),
        )
    except aiodocker.DockerError as exc:
        if exc.status != 404:
            raise
