"""The Docker Engine client for container mode (aiodocker), with a clear error when no daemon
answers.

aiodocker raises a bare AssertionError when no socket exists at its default paths and
DOCKER_HOST is unset, and DockerError 900 when the socket or port does not answer
(../shared/reference/containers.md): both become `DockerUnavailableError`, naming where it
looked. `DOCKER_HOST` (a Unix socket, or tcp:// to a remote daemon) is honoured as docker does.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import aiodocker
import aiohttp

from fleet_core.errors import FleetError

log = logging.getLogger(__name__)
T = TypeVar("T")
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


class Daemon:
    """One daemon's client, connected on first use and again after the daemon was away; every
    call through `call` turns a daemon that does not answer into DockerUnavailableError."""

    def __init__(self, url: str | None = None) -> None:
        self.url = url
        self.current: aiodocker.Docker | None = None
        self._connecting = asyncio.Lock()

    @property
    def host(self) -> str:
        return where(self.url)

    async def client(self) -> aiodocker.Docker:
        async with self._connecting:
            if self.current is None:
                self.current = await connect(self.url)
            return self.current

    async def call(self, what: str, call: Callable[[aiodocker.Docker], Awaitable[T]]) -> T:
        docker = await self.client()
        try:
            return await call(docker)
        except aiodocker.DockerError as exc:
            if exc.status == 900:
                await self.close()
                raise DockerUnavailableError(f"{what}: {exc.message}") from None
            raise
        except aiohttp.ClientError as exc:  # the daemon went away mid-answer
            await self.close()
            raise DockerUnavailableError(
                f"{what}: the daemon at {self.host} went away: {exc}"
            ) from None

    async def health(self) -> str | None:
        """None when the daemon answers; else the line the console shows."""
        try:
            await self.call("docker version", lambda d: d.version())
        except DockerUnavailableError as exc:
            return f"container mode unavailable: {exc}"
        except Exception as exc:  # a daemon that died mid-answer (aiohttp's payload error)
            await self.close()
            return f"container mode unavailable: {exc}"
        return None

    async def close(self) -> None:
        if self.current is not None:
            docker, self.current = self.current, None
            try:
                await docker.close()
            except Exception:  # a daemon killed mid-stream re-raises its payload error here
                log.debug("closing the Docker client failed", exc_info=True)
