"""Each task's own checkout: a clone sharing objects with the operator's repository.

A clone (`git clone --shared`), not a linked worktree: a worktree's `.git` points into the
operator's repository, so an agent could rewrite any branch there. The clone is owned by the
agent user; the agent commits in it, and the engine publishes: it fetches the task's branch
from the checkout into the repository (git's upload-pack, safe against an untrusted
repository) and pushes it to `origin` from there. Every git command the engine runs *inside*
a checkout uses `checkout_env()`: the checkout's `.git` is agent-written, so hooks, fsmonitor,
external diff and pagers are turned off and the ownership check is passed explicitly.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from fleet_core.db.sysuser import RunAs
from fleet_core.runtime.contained import Confinement, chown_tree
from fleet_core.runtime.git import GIT_TIMEOUT_S, git, git_env
from fleet_core.runtime.proc import CommandError, Result, run

HARDENING = (
    ("core.hooksPath", "/dev/null"),
    ("core.fsmonitor", "false"),
    ("core.untrackedCache", "false"),
    ("core.pager", "cat"),
    ("core.sshCommand", "false"),
    ("diff.external", ""),
    ("protocol.ext.allow", "never"),
    ("safe.directory", "*"),
)


def safe_config(data_dir: Path) -> Path:
    """A global config file that only trusts our checkouts' ownership (used where git drops
    `-c`/GIT_CONFIG_* for the process it starts, e.g. upload-pack of a local fetch)."""
    path = data_dir / "git" / "engine.gitconfig"
    body = "# written by fleet\n[safe]\n\tdirectory = *\n[core]\n\thooksPath = /dev/null\n"
    if not path.exists() or path.read_text() != body:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    return path


def checkout_env(data_dir: Path) -> dict[str, str]:
    env = git_env()
    env["GIT_CONFIG_GLOBAL"] = str(safe_config(data_dir))
    env["GIT_CONFIG_NOSYSTEM"] = "1"
    env["GIT_CONFIG_COUNT"] = str(len(HARDENING))
    for i, (key, value) in enumerate(HARDENING):
        env[f"GIT_CONFIG_KEY_{i}"] = key
        env[f"GIT_CONFIG_VALUE_{i}"] = value
    for name in ("GIT_DIR", "GIT_WORK_TREE", "GIT_EXTERNAL_DIFF", "GIT_SSH_COMMAND"):
        env.pop(name, None)
    return env


async def in_checkout(
    data_dir: Path, checkout: Path, *args: str, check: bool = True, timeout: float = GIT_TIMEOUT_S
) -> Result:
    """git in an agent's checkout, trusting nothing of its config."""
    argv = ["git", "--no-pager", "-C", str(checkout), *args]
    return await run(argv, env=checkout_env(data_dir), timeout=timeout, check=check)


async def as_agent(
    box: Confinement,
    checkout: Path,
    objects: list[Path],
    *args: str,
    check: bool = True,
    timeout: float = GIT_TIMEOUT_S,
) -> Result:
    """git in an agent's checkout run as the agent, in its sandbox (when there is one): for
    the commands that read its working tree (status, add, diff against it), where a filter
    its config names (`filter.<x>.clean` with `.gitattributes`) would otherwise run with
    fleet's rights. Hooks and fsmonitor stay off."""
    argv = ["git", "--no-pager", "-c", "core.hooksPath=/dev/null", "-c", "core.fsmonitor=false",
            *args]  # fmt: skip
    env = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "GIT_OPTIONAL_LOCKS": "0"}
    try:
        return await box.run(argv, cwd=checkout, writable=[checkout], readable=objects,
                             env=env, timeout=timeout)  # fmt: skip
    except CommandError as exc:
        if check or exc.returncode is None:
            raise
        return Result(exc.returncode, "", exc.output)


def take_file(checkout: Path, name: str, dest: Path) -> None:
    """Move `.git/<name>` (written by `as_agent`) out of the checkout to `dest`, never
    following a link the agent may have put at `.git` or at the file."""
    flags = os.O_RDONLY | os.O_NOFOLLOW
    git_dir = os.open(checkout / ".git", flags | os.O_DIRECTORY)
    try:
        src = os.open(name, flags, dir_fd=git_dir)
        try:
            out = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                while chunk := os.read(src, 1 << 20):
                    os.write(out, chunk)
            finally:
                os.close(out)
        finally:
            os.close(src)
        os.unlink(name, dir_fd=git_dir)
    finally:
        os.close(git_dir)


async def create(
    repo: Path,
    checkout: Path,
    branch: str,
    start: str,
    owner: RunAs,
) -> None:
    """Clone `repo` into `checkout` sharing its objects, on a new `branch` at `start`, with
    the repository's commit identity, owned by `owner`."""
    checkout.parent.mkdir(parents=True, exist_ok=True)
    sha = (await git(repo, "rev-parse", "--verify", f"{start}^{{commit}}")).stdout.strip()
    await run(["git", "clone", "--quiet", "--shared", "--no-checkout", "--", str(repo),
               str(checkout)], env=git_env(), timeout=GIT_TIMEOUT_S)  # fmt: skip
    for key in ("user.name", "user.email"):
        value = (await git(repo, "config", "--get", key, check=False)).stdout.strip()
        if value:
            await git(checkout, "config", key, value)
    await git(checkout, "checkout", "--quiet", "-b", branch, sha)
    if owner.uid is not None:
        await asyncio.to_thread(chown_tree, checkout, owner.uid, owner.gid or 0)


async def head(data_dir: Path, checkout: Path, branch: str) -> str | None:
    """The checkout's commit for `branch`, through upload-pack (never its hooks)."""
    result = await run(
        ["git", "ls-remote", "--", str(checkout), f"refs/heads/{branch}"],
        env=checkout_env(data_dir),
        timeout=GIT_TIMEOUT_S,
        check=False,
    )
    sha = result.stdout.split("\t", 1)[0].strip()
    return sha or None


async def collect(data_dir: Path, repo: Path, checkout: Path, branch: str) -> None:
    """Fetch the task's branch from its checkout into the repository (its `refs/heads/`)."""
    ref = f"refs/heads/{branch}"
    await run(["git", "-C", str(repo), "fetch", "--quiet", "--no-tags", "--no-write-fetch-head",
               "--", str(checkout), f"+{ref}:{ref}"], env=checkout_env(data_dir),
              timeout=GIT_TIMEOUT_S)  # fmt: skip


async def publish(data_dir: Path, repo: Path, checkout: Path, branch: str) -> None:
    """Collect the task's branch, then push it to the repository's origin (without hooks)."""
    await collect(data_dir, repo, checkout, branch)
    ref = f"refs/heads/{branch}"
    await git(repo, "push", "--quiet", "--no-verify", "origin", f"+{ref}:{ref}")
