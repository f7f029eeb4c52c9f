"""A container agent's output, from the Engine API's logs endpoint into the kept log file
(the same file local mode's pipe-pane writes: `fleet logs`, the console and the API read it).

The follow stream drops a last line that has no newline (the daemon's behaviour), so once it
ends the whole log is read again and what the stream missed is appended. A follower started
anew (the engine restarted) rewrites the file from the daemon's log, which holds everything
since the container started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from pathlib import Path

import aiodocker
import aiohttp

from fleet_core.runtime.agent_log import MAX_BYTES

log = logging.getLogger(__name__)


class LogFollower:
    def __init__(self, docker: aiodocker.Docker, name: str, path: Path) -> None:
        self.docker = docker
        self.name = name
        self.path = path
        self.written = 0  # characters of the daemon's log in the file
        self.task = asyncio.create_task(self._run(), name=f"fleet-log-{name}")

    @property
    def done(self) -> bool:
        return self.task.done()

    async def finish(self, timeout: float = 5.0) -> None:
        """Wait until the stream has ended and the file holds the whole log (at most
        `timeout`: a container that still runs keeps its follower)."""
        with contextlib.suppress(TimeoutError, asyncio.CancelledError, Exception):
            await asyncio.wait_for(asyncio.shield(self.task), timeout)

    def cancel(self) -> None:
        self.task.cancel()

    async def _run(self) -> None:
        await asyncio.to_thread(_start, self.path)
        container = self.docker.containers.container(self.name)
        try:
            async for chunk in container.log(stdout=True, stderr=True, follow=True):
                await self._append(chunk)
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            log.info("following %s ended: %s", self.name, exc)
        try:
            full = "".join(await container.log(stdout=True, stderr=True))
        except (aiodocker.DockerError, aiohttp.ClientError, OSError):
            return
        if len(full) > self.written:
            await self._append(full[self.written :])

    async def _append(self, text: str) -> None:
        self.written += len(text)
        await asyncio.to_thread(_append, self.path, text.encode(errors="replace"))


def _start(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.close(fd)
    path.with_name(path.name + ".1").unlink(missing_ok=True)


def _append(path: Path, data: bytes) -> None:
    try:
        if path.stat().st_size + len(data) > MAX_BYTES:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
