"""Git operations the runtime needs, as async subprocesses with timeouts."""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fleet_core.errors import BadInputError
from fleet_core.runtime.proc import CommandError, Result, run

GIT_TIMEOUT_S = 120.0


def git_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"})
    return env


async def git(repo: Path, *args: str, timeout: float = GIT_TIMEOUT_S, check: bool = True) -> Result:
    return await run(["git", "-C", str(repo), *args], env=git_env(), timeout=timeout, check=check)


async def repo_paths(path: Path) -> tuple[Path, Path]:
    """(top-level directory, common git dir) of the repository at `path`, in one call."""
    if not path.is_dir():
        raise BadInputError("repository", f"{path} is not a directory")
    result = await git(path, "rev-parse", "--show-toplevel", "--git-common-dir", check=False)
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) != 2:
        raise BadInputError("repository", f"{path} is not a git repository (with a work tree)")
    top = Path(lines[0]).resolve()
    return top, (top / lines[1]).resolve() if not Path(lines[1]).is_absolute() else Path(lines[1])


async def repo_root(path: Path) -> Path:
    return (await repo_paths(path))[0]


async def ref_exists(repo: Path, ref: str) -> bool:
    result = await git(repo, "rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}", check=False)
    return result.returncode == 0


async def default_branch(repo: Path) -> str:
    """origin's HEAD when known, else the checked-out branch, else 'main'."""
    for args in (
        ("symbolic-ref", "--quiet", "--short", "refs/remotes/origin/HEAD"),
        ("symbolic-ref", "--quiet", "--short", "HEAD"),
    ):
        result = await git(repo, *args, check=False)
        name = result.stdout.strip()
        if result.returncode == 0 and name:
            return name.removeprefix("origin/")
    return "main"


async def base_ref(repo: Path, base: str) -> str:
    """The commit-ish a new branch starts from: the local branch, else origin's."""
    for ref in (f"refs/heads/{base}", f"refs/remotes/origin/{base}"):
        if await ref_exists(repo, ref):
            return ref
    raise BadInputError("base_branch", f"{base!r} is not a branch of {repo}")


class RepoLocks:
    """Serialise `git worktree add/remove` per repository: an asyncio lock inside this process
    plus a file lock (in our data dir, never in the user's .git) across processes."""

    def __init__(self, lock_dir: Path) -> None:
        self.lock_dir = lock_dir
        self._locks: dict[Path, asyncio.Lock] = {}

    @asynccontextmanager
    async def hold(self, repo: Path, common: Path | None = None) -> AsyncIterator[None]:
        key = common or (await repo_paths(repo))[1]
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            self.lock_dir.mkdir(parents=True, exist_ok=True)
            name = hashlib.sha256(str(key).encode()).hexdigest()[:16]
            fd = os.open(self.lock_dir / f"repo-{name}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            try:
                while True:  # polled, so a cancelled waiter leaves nothing behind
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except BlockingIOError:
                        await asyncio.sleep(0.02)
                yield
            finally:
                os.close(fd)


__all__ = ["CommandError", "RepoLocks", "git"]
