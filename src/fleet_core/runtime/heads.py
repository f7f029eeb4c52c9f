"""The commit at the tip of each task's branch in its checkout, read again only when it may
have changed, and each commit's time, read once.

Reading a branch of an agent's checkout costs a process (`git ls-remote`, through upload-pack:
the checkout's config and hooks are agent-written and never trusted), so the monitor's cycle
would pay one per running task, whether or not anything moved. A ref only moves by writing
its file (`refs/heads/<branch>`, replaced by a rename), `packed-refs` or a reftable, so the
`lstat` of those (inode, size, mtime and ctime, which no one can set back) is kept with the
answer, and git is asked again only when one of them changed. A commit's time never changes:
it is read once per commit (`git log -1 --format=%ct <sha>`, hardened, in the checkout).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from fleet_core.runtime import checkout as co

Signature = tuple[tuple[int, int, int, int] | None, ...]


@dataclass
class _Known:
    signature: Signature
    sha: str | None
    commit_time: tuple[str, int | None] | None = None  # (sha, committer time)


def signature(checkout: Path, branch: str) -> Signature | None:
    """What a move of `branch` in `checkout` changes; None when no ref store was found (then
    nothing is cached)."""
    git_dir = checkout / ".git"
    out: list[tuple[int, int, int, int] | None] = []
    for path in (git_dir, git_dir / "refs" / "heads" / branch, git_dir / "packed-refs",
                 git_dir / "reftable" / "tables.list"):  # fmt: skip
        try:
            st = os.lstat(path)
        except OSError:
            out.append(None)
            continue
        out.append((st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns))
    if out[0] is None or all(s is None for s in out[1:]):
        return None
    return tuple(out)


class BranchHeads:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._known: dict[UUID, _Known] = {}
        self.reads = 0  # git processes run (ls-remote and log), for tests and benchmarks

    def forget(self, task_id: UUID) -> None:
        self._known.pop(task_id, None)

    def keep_only(self, task_ids: set[UUID]) -> None:
        for task_id in set(self._known) - task_ids:
            del self._known[task_id]

    async def head(self, task_id: UUID, checkout: Path, branch: str) -> str | None:
        """The commit of `branch` in the task's checkout (None: no such branch)."""
        sig = signature(checkout, branch)
        known = self._known.get(task_id)
        if sig is not None and known is not None and known.signature == sig:
            return known.sha
        self.reads += 1
        sha = await co.head(self.data_dir, checkout, branch)
        if sig is None:
            self._known.pop(task_id, None)
        elif known is not None and known.sha == sha:
            known.signature = sig
        else:
            self._known[task_id] = _Known(sig, sha)
        return sha

    async def last_commit(
        self, task_id: UUID, checkout: Path, branch: str
    ) -> tuple[str, int | None] | None:
        """(sha, committer time in seconds) of the branch's tip; None without the branch."""
        sha = await self.head(task_id, checkout, branch)
        if sha is None:
            return None
        known = self._known.get(task_id)
        if known is not None and known.commit_time is not None and known.commit_time[0] == sha:
            return known.commit_time
        self.reads += 1
        out = await co.in_checkout(self.data_dir, checkout, "log", "-1", "--format=%ct", sha,
                                   "--", check=False)  # fmt: skip
        stamp = out.stdout.strip()
        found = (sha, int(stamp) if stamp.isdigit() else None)
        if known is not None and known.sha == sha and out.returncode == 0:
            known.commit_time = found
        return found
