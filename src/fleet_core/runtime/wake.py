"""The engine's end of the wake socket: launchers say `ended <task id>` when an agent ends.

A Unix datagram socket, `wake.sock` in the run area (the run directories' parent, 0700 like
them, the socket itself 0600): only fleet's user, the one the launchers run as, can send.
One process per data dir listens: the first to bind. A socket file left by an engine that
died refuses a probe datagram and is replaced; one that accepts it belongs to a live engine,
and then this one does not listen (its periodic cycle still sees every exit).

What arrives is only a hint: the monitor reads the task's row and its exit record itself, so a
datagram naming a task that did not end, or no task at all, costs one lookup and changes
nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from uuid import UUID

from fleet_core.runtime.launch import SOCKET_PATH_MAX, WAKE_SOCKET

log = logging.getLogger(__name__)

MAX_DATAGRAM = 256
MAX_PER_READ = 1000  # datagrams read per wake-up of the loop, so a flood never starves it


@contextlib.contextmanager
def _short(path: Path) -> Iterator[str]:
    """A name for `path` that fits in sun_path: itself, or its directory's descriptor's
    /proc/self/fd entry (sun_path holds 108 bytes; a test's or a deep data dir is longer)."""
    if len(str(path).encode()) <= SOCKET_PATH_MAX:
        yield str(path)
        return
    dfd = os.open(path.parent, os.O_PATH | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{dfd}/{path.name}"
    finally:
        os.close(dfd)


def send(runs: Path, task_id: UUID) -> bool:
    """What the launcher sends (for tests and tools): True when a listener took it."""
    try:
        with _short(runs / WAKE_SOCKET) as name:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.sendto(f"ended {task_id}\n".encode(), name)
            finally:
                sock.close()
    except OSError:
        return False
    return True


def parse(data: bytes) -> UUID | None:
    """The task id of an `ended <id>` datagram; None for anything else."""
    try:
        verb, _, rest = data.decode("ascii").strip().partition(" ")
        return UUID(rest) if verb == "ended" else None
    except (UnicodeDecodeError, ValueError):
        return None


class WakeListener:
    def __init__(self, runs: Path, on_wake: Callable[[UUID], None]) -> None:
        self.path = runs / WAKE_SOCKET
        self.on_wake = on_wake
        self.received = 0
        self._sock: socket.socket | None = None
        self._inode: int | None = None

    @property
    def listening(self) -> bool:
        return self._sock is not None

    def start(self) -> bool:
        """Bind and listen on the running loop; False when another engine listens (or the
        socket cannot be made: then the periodic cycle alone sees exits)."""
        if self._sock is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            sock = self._bind()
        except OSError as exc:
            log.warning("no wake socket at %s: %s (exits are seen at each cycle)", self.path, exc)
            return False
        if sock is None:
            log.info("another engine listens on %s", self.path)
            return False
        self._sock = sock
        self._inode = os.stat(self.path).st_ino
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)
        return True

    def _bind(self) -> socket.socket | None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            with _short(self.path) as name:
                try:
                    sock.bind(name)
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
                    if self._alive(name):
                        sock.close()
                        return None
                    os.unlink(self.path)  # left by an engine that died
                    sock.bind(name)
            os.chmod(self.path, 0o600)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    @staticmethod
    def _alive(name: str) -> bool:
        """Whether someone listens on the socket file (a probe it ignores)."""
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            probe.setblocking(False)
            probe.sendto(b"\n", name)
        except BlockingIOError:
            return True  # its queue is full: it is there
        except OSError:
            return False  # ECONNREFUSED: nobody has it open
        finally:
            probe.close()
        return True

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        for _ in range(MAX_PER_READ):
            try:
                data = sock.recv(MAX_DATAGRAM)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                log.warning("wake socket: %s", exc)
                return
            task_id = parse(data)
            if task_id is not None:
                self.received += 1
                self.on_wake(task_id)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            asyncio.get_running_loop().remove_reader(sock.fileno())
        sock.close()
        try:
            if os.stat(self.path).st_ino == self._inode:  # still ours, not a successor's
                os.unlink(self.path)
        except OSError:
            pass
