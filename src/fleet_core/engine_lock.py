"""The engine lock (DESIGN §10): on one host and data dir, one process runs the engine (the
monitor, the queue loop, the outbox worker): whichever holds `<data_dir>/engine/<host>.lock`,
an exclusive `flock` (the kernel releases it when the holder exits, however it ends). The
holder writes who it is into the file (pid, role, since), so that `fleet engine status` and the
clients can say who serves them; a file whose lock nobody holds says nothing.

No engine import here: the CLI's verbs ask "is an engine running?" without paying for it."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

# What holds the lock: the CLI's detached engine, the console, `fleet --headless`, the demo.
ROLES = ("background", "console", "headless", "demo")


@dataclass(frozen=True)
class Holder:
    """Who runs the engine here."""

    pid: int
    role: str
    host: str
    since: str  # ISO 8601, UTC
    idle_minutes: float | None = None  # a background engine stops after this long idle

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    def line(self) -> str:
        what = "the background engine" if self.role == "background" else f"a {self.role}"
        return f"{what} (pid {self.pid}, since {self.since[:19].replace('T', ' ')} UTC)"


def lock_path(data_dir: Path, host_id: str) -> Path:
    """One lock per data dir and host (a data dir on a shared disk may serve several hosts)."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", host_id)[:100] or "host"
    return data_dir / "engine" / f"{safe}.lock"


class EngineLock:
    """The lock of one data dir and host, held by this process once `acquire` says so."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self, holder: Holder, *, wait_s: float = 0.0) -> bool:
        """Take the lock (trying for up to `wait_s`: a prober holds it for an instant) and
        write `holder` into the file; False when another process holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)  # not inherited by children
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return False
                time.sleep(0.05)
        doc = json.dumps(holder.to_dict()).encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, doc, 0)
        os.fsync(fd)
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # nobody holds it: it says nothing
            os.close(fd)  # closing releases the lock


def current_holder(path: Path) -> Holder | None:
    """Who holds the lock now (None: nobody: no engine runs here). Taking a shared lock for an
    instant is the test: it fails exactly while a holder has the exclusive one."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read(fd) or Holder(0, "unknown", "", "")
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _read(fd: int) -> Holder | None:
    """The holder's record; None while it is still being written (an instant after taking)."""
    for _ in range(20):
        raw = os.pread(fd, 4096, 0)
        try:
            doc = json.loads(raw)
            return Holder(int(doc["pid"]), str(doc["role"]), str(doc["host"]), str(doc["since"]),
                          doc.get("idle_minutes"))  # fmt: skip
        except (ValueError, KeyError, TypeError):
            time.sleep(0.05)
    return None


def me(role: str, host: str, idle_minutes: float | None = None) -> Holder:
    since = datetime.now(UTC).isoformat(timespec="seconds")
    return Holder(os.getpid(), role, host, since, idle_minutes)
