"""The Docker Engine client for container mode (aiodocker), with a clear error when no daemon
answers.

aiodocker raises a bare AssertionError when no socket exists at its default paths and
DOCKER_HOST is unset, and DockerError 900 when the socket or port does not answer
(../shared/reference/containers.md): both become `DockerUnavailableError`, naming where it
looked. `DOCKER_HOST` (a Unix socket, or tcp:// to a remote daemon) is honoured as docker does.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiodocker

from fleet_core.errors import FleetError

DEFAULT_SOCKETS = (Path("/run/docker.sock"), Path("/var/run/docker.sock"))


class DockerUnavailableError(FleetError):
    """No Docker daemon answers where fleet looked."""


def where(url: str | None = None) -> str:
    """The daemon fleet would talk to: the configured URL, DOCKER_HOST, or the default socket."""
    if url:
        return url
    host = os.environ.get("DOCKER_HOST")
    if host:
        return host
    for sock in DEFAULT_SOCKETS:
        if sock.is_socket():
            return f"unix://{sock}"
    return f"unix://{DEFAULT_SOCKETS[1]}"


def _hint(url: str) -> str:
    return (f"no Docker daemon reachable at {url} (start dockerd, or set DOCKER_HOST or "
            "[container] docker_host)")  # fmt: skip


async def connect(url: str | None = None) -> aiodocker.Docker:
    """A client whose daemon has answered `version`; DockerUnavailableError otherwise."""
    target = where(url)
    if target.startswith("unix://") and not Path(target[len("unix://") :]).is_socket():
        raise DockerUnavailableError(_hint(target) + ": no socket there")
    client = aiodocker.Docker(url=target)
    try:
        await client.version()
    except aiodocker.DockerError as exc:
        await client.close()
        raise DockerUnavailableError(f"{_hint(target)}: {exc.message}") from None
    except Exception as exc:  # aiohttp's payload or OS errors when the daemon dies
        await client.close()
        raise DockerUnavailableError(f"{_hint(target)}: {exc}") from None
    return client


@asynccontextmanager
async def client(url: str | None = None) -> AsyncIterator[aiodocker.Docker]:
    docker = await connect(url)
    try:
        yield docker
    finally:
        await docker.close()
