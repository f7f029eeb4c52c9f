"""Whether a running agent makes progress: a hang is caught by silence, not only by the
task's timeout.

Progress is new output in its kept log (except what its adapter knows as waiting noise:
codex's "Reconnecting... waiting for network", a spinner), CPU time used by its process tree
(more than a small share of one core since the last look), or a change in its checkout (HEAD
or the working tree). No progress for the agent type's `idle_minutes` → idle.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from fleet_core.runtime import agent_log
from fleet_core.runtime.agent_profiles import Profile
from fleet_core.runtime.procfs import stat_fields

CPU_SHARE = 0.05  # of one core, over the time since the last look: below that, it waits
NEW_OUTPUT_CAP = 256_000
TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class _Seen:
    at: float  # monotonic time of the last progress
    looked: float  # monotonic time of the last look
    log_size: int = 0
    cpu: float = 0.0
    checkout: str = ""
    fingerprinted: float = 0.0  # monotonic time of the last walk of the checkout


class ProgressWatch:
    def __init__(
        self,
        data_dir: Path,
        clock: Callable[[], float] = time.monotonic,
        *,
        fingerprint_every_s: float = 0.0,
    ) -> None:
        self.data_dir = data_dir
        self._clock = clock
        # A checkout's walk is the one look whose cost grows with the agent's work: taken at
        # most this often per agent (progress it finds is then that much late: an idle limit
        # is minutes, so the monitor passes half of one).
        self.fingerprint_every_s = fingerprint_every_s
        self._seen: dict[UUID, _Seen] = {}
        self._procs: ProcTable | None = None  # this cycle's one read of /proc

    def forget(self, task_id: UUID) -> None:
        self._seen.pop(task_id, None)

    def keep_only(self, running: set[UUID]) -> None:
        """Called at each cycle's start: forgets ended agents, and the cycle reads /proc
        afresh (once, for all its agents)."""
        for tid in set(self._seen) - running:
            del self._seen[tid]
        self._procs = None

    async def _tree_cpu(self, root: int) -> float:
        if self._procs is None:
            self._procs = await asyncio.to_thread(ProcTable.read)
        return self._procs.tree_cpu(root)

    async def idle_for(
        self,
        task_id: UUID,
        *,
        log_path: Path,
        pane_pid: int | None,
        checkout: Path | None,
        profile: Profile,
    ) -> float:
        """Seconds since this agent last made progress (0 at the first look)."""
        now = self._clock()
        size = _size(log_path)
        cpu = await self._tree_cpu(pane_pid) if pane_pid else 0.0
        seen = self._seen.get(task_id)
        if seen is None:
            fp = await fingerprint(self.data_dir, checkout)
            self._seen[task_id] = _Seen(now, now, size, cpu, fp, now)
            return 0.0
        moved = False
        if size != seen.log_size:
            fresh = await asyncio.to_thread(_new_output, log_path, seen.log_size, size)
            moved = any(not (profile.noise and profile.noise.search(ln)) for ln in fresh)
            seen.log_size = size
        if cpu - seen.cpu > CPU_SHARE * max(now - seen.looked, 0.001):
            moved = True
        seen.cpu = cpu
        if not moved and now - seen.fingerprinted >= self.fingerprint_every_s:
            seen.fingerprinted = now
            fp = await fingerprint(self.data_dir, checkout)
            if fp != seen.checkout:
                seen.checkout, moved = fp, True
        seen.looked = now
        if moved:
            seen.at = now
        return now - seen.at


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _new_output(path: Path, before: int, size: int) -> list[str]:
    """The readable lines appended since `before` (all of a file that was rotated)."""
    start = before if size > before else 0
    try:
        with open(path, "rb") as fh:
            fh.seek(max(start, size - NEW_OUTPUT_CAP))
            data = fh.read(NEW_OUTPUT_CAP)
    except OSError:
        return []
    return agent_log.readable(data)


async def fingerprint(data_dir: Path, checkout: Path | None) -> str:
    """The checkout's state, hashed ("" without a checkout): every entry's path, size and
    mtime, from `lstat` alone. Never git: the checkout's config is agent-written, and git
    reading its working tree runs whatever clean filter that config names (as fleet's user).
    `.git/objects` is left out (a commit also changes `.git/index` and the refs)."""
    if checkout is None or not checkout.is_dir():
        return ""
    return await asyncio.to_thread(_tree_hash, checkout)


def _tree_hash(top: Path) -> str:
    digest = hashlib.sha256()
    skip = top / ".git" / "objects"
    for root, dirs, files in os.walk(top):
        if Path(root) == skip.parent:
            dirs[:] = [d for d in dirs if d != "objects"]
        dirs.sort()
        for name in sorted(files) + dirs:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            digest.update(f"{path}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class ProcTable:
    """Every process's parent and CPU time (user + system), from one read of /proc."""

    def __init__(self, parents: dict[int, int], cpu: dict[int, float]) -> None:
        self.cpu = cpu
        self.children: dict[int, list[int]] = {}
        for pid, parent in parents.items():
            self.children.setdefault(parent, []).append(pid)

    @classmethod
    def read(cls) -> ProcTable:
        parents: dict[int, int] = {}
        cpu: dict[int, float] = {}
        try:
            for pid, fields in stat_fields():
                if len(fields) >= 13:
                    parents[pid] = int(fields[1])
                    cpu[pid] = (int(fields[11]) + int(fields[12])) / TICKS
        except OSError:
            pass  # no /proc: no CPU seen
        return cls(parents, cpu)

    def tree_cpu(self, root: int) -> float:
        """CPU seconds of `root` and every descendant."""
        if root not in self.cpu:
            return 0.0
        total, todo, seen = 0.0, [root], {root}
        while todo:
            pid = todo.pop()
            total += self.cpu.get(pid, 0.0)
            for child in self.children.get(pid, ()):
                if child not in seen:
                    seen.add(child)
                    todo.append(child)
        return total


def tree_cpu_seconds(root: int) -> float:
    """User and system CPU time of `root` and every descendant, from /proc."""
    return ProcTable.read().tree_cpu(root)
