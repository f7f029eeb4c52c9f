"""The background engine: what the CLI starts when a verb creates or revives agents and no
engine serves this host and data dir (a console, `fleet --headless` or an earlier background
engine). It is `fleet engine run` in a detached process (its own session, like the embedded
database), holding the engine lock; it logs to the log file and stops by itself once no task
of this host is live or pending (and nothing is queued) for `engine_idle_minutes`.

Starting it (`start_detached`) waits until the engine is up and says so on a pipe, so the
caller can tell the user it runs, or why it does not."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fleet_core.engine_lock import Holder, current_holder, lock_path

if TYPE_CHECKING:
    from fleet_core.config import Settings

log = logging.getLogger(__name__)

READY_TIMEOUT_S = 90.0  # the database may have to start first
ALREADY = "already"  # what `fleet engine run` says on its pipe when another engine holds the lock


@dataclass(frozen=True)
class Started:
    holder: Holder | None  # None: it did not start (see `error`)
    started: bool  # False: an engine ran already (`holder` is that one)
    error: str | None = None


def running(settings: Settings) -> Holder | None:
    return current_holder(lock_path(settings.data_dir, settings.host_id))


def start_detached(settings: Settings) -> Started:
    """`fleet engine run` in its own session; returns once it holds the lock and its engine is
    up (or has said why not)."""
    holder = running(settings)
    if holder is not None:
        return Started(holder, started=False)
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    out = settings.log_dir / "engine.out"  # what escapes the log file (a crash's traceback)
    read_fd, write_fd = os.pipe()
    try:
        with out.open("ab") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "fleet_core", "engine", "run", "--ready-fd", str(write_fd)],
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                pass_fds=(write_fd,),
                start_new_session=True,  # a Ctrl-C in the user's terminal must not reach it
                close_fds=True,
                cwd=settings.data_dir,  # not the caller's directory, which may go away
            )
        os.close(write_fd)
        write_fd = -1
        answer = _read_line(read_fd, READY_TIMEOUT_S)
    finally:
        if write_fd >= 0:
            os.close(write_fd)
        os.close(read_fd)
    if answer == "ready":
        return Started(running(settings), started=True)
    if answer == ALREADY:
        return Started(running(settings), started=False)
    if proc.poll() is None and not answer:
        return Started(None, False, f"it did not answer within {READY_TIMEOUT_S:.0f} s ({out})")
    return Started(None, False, answer or f"it exited at once (exit {proc.poll()}); see {out}")


def _read_line(fd: int, timeout: float) -> str:
    """The child's one line: 'ready', 'already', or why it failed ('' when it said nothing)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            break
        chunk = os.read(fd, 4096)
        if not chunk:  # the child closed its end (exited)
            break
        data += chunk
    return data.decode(errors="replace").strip()


def autostart_notice(settings: Settings) -> str | None:
    """After a verb that created or revived agents: start the background engine unless an
    engine serves this host and data dir (or `engine_autostart` is off); the line to show the
    user when one was started or could not be, None when there is nothing to say."""
    if not settings.engine_autostart or running(settings) is not None:
        return None
    result = start_detached(settings)
    if result.error is not None:
        return (
            f"fleet: no engine runs here and the background engine did not start: "
            f"{result.error}; until one runs (`fleet engine start`, the console or "
            "`fleet --headless`), tasks stay where they are"
        )
    if not result.started or result.holder is None:
        return None  # another process became the engine meanwhile
    return (
        f"fleet: started the background engine (pid {result.holder.pid}): it follows your "
        f"tasks and stops after {settings.engine_idle_minutes:g} min with nothing to do "
        "(`fleet engine status`)"
    )


def say_ready(fd: int | None, line: str) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError):
        os.write(fd, (line.replace("\n", " ") + "\n").encode())
        os.close(fd)
