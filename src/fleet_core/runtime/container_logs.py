"""A container agent's output, from the Engine API's logs endpoint into the kept log file
(the same file local mode's pipe-pane writes: `fleet logs`, the console and the API read it).

The stream is asked for with the daemon's timestamps, which are cut off before writing; the
last one written is kept (in the task's run directory) so that a follower started anew beside a
running container (the engine restarted) asks only for what came after it: nothing is written
twice or lost. The follow stream drops a last line that has no newline (the daemon's
behaviour), so once it ends the log after that timestamp is read once more. The file is appended
to, never truncated: a retry's container adds its output after the earlier attempts'.

A follow stream that ends by itself means the container stopped: the follower then calls its
`on_end` (the runtime sends the task's wake, as local mode's launcher does: the launcher in a
container cannot reach the engine's wake socket, by design). A stream cut by an error calls
nothing, so a daemon that drops streams of running containers cannot make wakes loop.
"""

from __future__ import annotations

import asyncio
import calendar
import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

import aiodocker
import aiohttp

from fleet_core.runtime.agent_log import MAX_BYTES
from fleet_core.runtime.runfiles import write_atomic

log = logging.getLogger(__name__)


class LogFollower:
    def __init__(
        self, docker: aiodocker.Docker, name: str, path: Path, mark: Path, *, resume: bool,
        on_end: Callable[[], object] | None = None,
    ) -> None:  # fmt: skip
        self.docker = docker
        self.on_end = on_end
        self.name = name
        self.path = path
        self.mark = mark  # the next `since`: just after the last entry written
        self.resume = resume
        self.since = "0"  # from the start
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
        if self.resume:
            found = await asyncio.to_thread(_read, self.mark)
            self.since = found or "0"
        container = self.docker.containers.container(self.name)
        try:
            stream = container.log(
                stdout=True, stderr=True, follow=True, timestamps=True, since=self.since
            )
            async for chunk in stream:
                await self._take(chunk)
            stopped = True
        except (aiodocker.DockerError, aiohttp.ClientError, OSError) as exc:
            log.info("following %s ended: %s", self.name, exc)
            stopped = False
        try:  # what the follow stream missed: a last line without a newline
            rest = await container.log(stdout=True, stderr=True, timestamps=True,
                                       since=self.since)  # fmt: skip
        except (aiodocker.DockerError, aiohttp.ClientError, OSError):
            rest = []
        for chunk in rest:
            await self._take(chunk)
        if stopped and self.on_end is not None:
            self.on_end()

    async def _take(self, chunk: str) -> None:
        stamp, sep, text = chunk.partition(" ")
        after = _after(stamp) if sep else None
        if after is None:  # not a timestamped entry: kept as it is
            after, text = self.since, chunk
        self.since = after
        await asyncio.to_thread(_append, self.path, text.encode(errors="replace"))
        await asyncio.to_thread(write_atomic, self.mark, after.encode())


class Followers:
    """One follower per task, started again when the last one has ended; `on_end(task id)`
    when a task's container stopped."""

    def __init__(self, on_end: Callable[[UUID], object] | None = None) -> None:
        self.by_task: dict[UUID, LogFollower] = {}
        self.on_end = on_end

    def start(
        self, task_id: UUID, docker: aiodocker.Docker, name: str, path: Path, mark: Path,
        *, resume: bool,
    ) -> None:  # fmt: skip
        follower = self.by_task.get(task_id)
        if follower is None or follower.done:
            ended = None if self.on_end is None else functools.partial(self.on_end, task_id)
            self.by_task[task_id] = LogFollower(docker, name, path, mark, resume=resume,
                                                on_end=ended)  # fmt: skip

    async def settle(self, task_id: UUID) -> None:
        """The file holds everything of an ended container's log."""
        follower = self.by_task.get(task_id)
        if follower is not None:
            await follower.finish()

    async def stop(self, task_id: UUID) -> None:
        follower = self.by_task.pop(task_id, None)
        if follower is not None:
            await follower.finish(timeout=2.0)
            follower.cancel()

    async def close(self) -> None:
        followers = list(self.by_task.values())
        self.by_task.clear()
        for follower in followers:
            follower.cancel()
        await asyncio.gather(*(f.task for f in followers), return_exceptions=True)


def _after(stamp: str) -> str | None:
    """The daemon's RFC 3339 timestamp (`2026-11-30T03:48:01.123456789Z`, trailing zeros cut)
    plus one nanosecond, as its `since` parameter reads it (seconds.nanoseconds)."""
    if len(stamp) < 20 or not stamp.endswith("Z") or stamp[10] != "T":
        return None
    try:
        seconds = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return None
    fraction = stamp[20:-1] if stamp[19] == "." else ""
    if not fraction.isdigit() and fraction:
        return None
    nanos = int(fraction.ljust(9, "0")[:9] or 0) + 1
    seconds, nanos = seconds + nanos // 10**9, nanos % 10**9
    return f"{seconds}.{nanos:09d}"


def _read(path: Path) -> str | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text if text.replace(".", "", 1).isdigit() else None


def _append(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
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
