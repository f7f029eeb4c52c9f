"""The local forge: GitHub's part played for a repository whose `origin` is a bare repository on
this machine.

A branch on the remote with commits not on the remote's HEAD branch (the base) is a PR,
numbered the first time it is seen; CI is the repository's configured command, run in the
background in a scratch worktree of the PR head (see local_ci); merge is a real `git merge`
into the base in a scratch worktree of the remote. State lives under `state_dir/<key>/`, the key
a hash of the remote's resolved path, so work repos sharing a remote agree:

    next.json, prs/<n>.json, branches/<hash>   the PR records, one file each (local_store)
    ci/<sha>.json   a finished CI run; ci/<sha>.log its output; ci/<sha>.run a running claim
    scratch/        CI and merge worktrees while they exist
    ../locks/repo-<hash>.lock   fcntl lock guarding the PR records and merges (processes)

Each call costs a constant number of git commands whatever the number of branches: the
remote's URL, then one `for-each-ref` for the heads (and one for those merged into the base).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import secrets
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from fleet_core.errors import FleetError
from fleet_core.forge.base import (
    CiReport,
    ForgeBudget,
    ForgeError,
    ForgeUnavailableError,
    MergeResult,
    PrState,
    PullRequest,
    review_text,
)
from fleet_core.forge.local_ci import CiRunner, now_iso, remove_worktree
from fleet_core.forge.local_store import PrStore
from fleet_core.models import CiStatus
from fleet_core.runtime.contained import Confinement
from fleet_core.runtime.git import GIT_TIMEOUT_S, RepoLocks, default_branch, git
from fleet_core.runtime.proc import CommandError, Result

log = logging.getLogger(__name__)
IDENTITY = ("-c", "user.name=fleet", "-c", "user.email=fleet@localhost")
HEADS = "refs/heads/"
_BARE = re.compile(r"^\s*bare\s*=\s*true\s*$", re.MULTILINE | re.IGNORECASE)


@dataclass(frozen=True)
class Remote:
    path: Path  # the bare repository
    dir: Path  # our state for it
    repo: Path | None = None  # the operator's repository it was reached from

    @property
    def store(self) -> PrStore:
        return PrStore(self.dir)

    @property
    def scratch(self) -> Path:
        return self.dir / "scratch"


@dataclass(frozen=True)
class Refs:
    heads: dict[str, str]  # branch → sha
    base: str  # the remote's HEAD branch
    merged: frozenset[str]  # branches whose tip the base contains


class LocalForge:
    name = "local"
    MERGE_CHECKS_PER_CALL = 4  # trial merges per find_prs; the rest are known on later calls

    def __init__(
        self,
        state_dir: Path,
        *,
        ci_command: Callable[[Path], list[str] | None],
        ci_timeout_s: float = 600.0,
        ci_parallel: int = 2,
        confinement: Confinement | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.calls = 0
        self._ci_command = ci_command
        self._ci = CiRunner(
            timeout_s=ci_timeout_s, parallel=ci_parallel, count=self._count,
            confinement=confinement,
        )  # fmt: skip
        self._locks = RepoLocks(state_dir / "locks")  # per remote: asyncio + fcntl
        self._mergeable: dict[tuple[Path, str, str], bool] = {}  # (remote, base, head) → clean
        self._health: str | None = None
        # Remotes without a HEAD branch, and the base used instead (said once per remote).
        self.headless: dict[Path, str] = {}

    # -- the Forge protocol ----------------------------------------------------------------

    async def find_prs(self, repo: Path, branches: Sequence[str]) -> dict[str, PullRequest]:
        wanted = list(dict.fromkeys(branches))
        if not wanted:
            return {}
        remote = await self._remote(repo)
        refs = await self._refs(remote, merged=True)
        found: dict[str, dict[str, Any]] = {}
        async with self._locks.hold(remote.path, remote.path):
            for branch in wanted:
                record = _track(remote.store, branch, refs)
                if record is not None:
                    found[branch] = record
        await self._check_mergeable(remote, refs, found.values())
        return {b: self._pull_request(remote, refs, r) for b, r in found.items()}

    async def ci_status(self, repo: Path, prs: Sequence[int]) -> dict[int, CiReport]:
        remote = await self._remote(repo)
        store = remote.store
        wanted = {n: r for n in dict.fromkeys(prs) if (r := store.get(n)) is not None}
        if not wanted:
            return {}
        heads = (await self._refs(remote, merged=False)).heads
        try:
            argv, problem = self._ci_command(repo), None
        except FleetError as exc:
            argv, problem = None, str(exc)
        reports: dict[int, CiReport] = {}
        for number, record in wanted.items():
            sha: str | None = record.get("head_sha")
            if record["state"] == PrState.OPEN:
                sha = heads.get(record["branch"], sha)
            if sha is None:
                reports[number] = CiReport(number, CiStatus.PENDING)
            elif problem is not None:
                reports[number] = CiReport(
                    number, CiStatus.FAILING, ("ci-config",), problem, head_sha=sha
                )
            else:
                reports[number] = self._ci.report(number, sha, remote.path, remote.dir, argv)
            reports[number] = replace(reports[number], pr_state=PrState(record["state"]))
        return reports

    async def poll(
        self, repo: Path, branches: Sequence[str], prs: Sequence[int]
    ) -> tuple[dict[str, PullRequest], dict[int, CiReport]]:
        found = await self.find_prs(repo, branches) if branches else {}
        return found, await self.ci_status(repo, prs) if prs else {}

    async def diff(self, repo: Path, pr: int) -> str:
        remote = await self._remote(repo)
        record = _get(remote, pr)
        left = record.get("base_sha") or HEADS + record["base"]
        right = HEADS + record["branch"]
        if record["state"] != PrState.OPEN and record.get("head_sha"):
            right = record["head_sha"]
        return (await self._git(remote.path, "diff", f"{left}...{right}", "--")).stdout

    async def behind(self, repo: Path, base: str, head: str) -> int:
        remote = await self._remote(repo)
        count = await self._git(remote.path, "rev-list", "--count", f"{head}..{HEADS}{base}", "--")
        return int(count.stdout.strip())

    async def open_pr(
        self, repo: Path, branch: str, base: str, title: str, body: str
    ) -> PullRequest | None:
        return None  # a pushed branch ahead of its base is a PR here

    async def comment(self, repo: Path, pr: int, body: str) -> None:
        remote = await self._remote(repo)
        async with self._locks.hold(remote.path, remote.path):
            record = _get(remote, pr)
            record.setdefault("comments", []).append({"at": now_iso(), "body": body})
            remote.store.put(record)

    async def review(
        self,
        repo: Path,
        pr: int,
        *,
        verdict: str,
        body: str,
        comments: Sequence[Mapping[str, Any]] = (),
        head_sha: str | None = None,
    ) -> None:
        """Kept with the PR as a comment (its line comments in its text)."""
        await self.comment(repo, pr, review_text(body, comments))

    async def merge(self, repo: Path, pr: int, *, method: str = "merge") -> MergeResult:
        if method == "rebase":
            return MergeResult(False, reason="rebase is not supported by the local forge")
        if method not in ("merge", "squash"):
            return MergeResult(False, reason=f"unknown merge method {method!r}")
        remote = await self._remote(repo)
        async with self._locks.hold(remote.path, remote.path):
            record = _get(remote, pr)
            if record["state"] == PrState.MERGED:
                return MergeResult(True, sha=record.get("merge_sha"), reason="already merged")
            heads = (await self._refs(remote, merged=False)).heads
            base, branch = record["base"], record["branch"]
            base_sha, head = heads.get(base), heads.get(branch)
            if base_sha is None or head is None:
                gone = base if base_sha is None else branch
                return MergeResult(False, reason=f"branch {gone} is not on the remote")
            contained = await self._git(
                remote.path, "merge-base", "--is-ancestor", head, base_sha, check=False
            )
            result = (
                MergeResult(True, sha=base_sha)
                if contained.returncode == 0
                else await self._merge_in_scratch(remote, pr, base, branch, head, method)
            )
            if result.merged:
                record.update(
                    state=PrState.MERGED.value,
                    head_sha=head,
                    base_sha=base_sha,
                    merge_sha=result.sha,
                    merged_at=now_iso(),
                    method=method,
                )
                remote.store.put(record)
            return result

    def budget(self) -> ForgeBudget:
        return ForgeBudget()

    def health(self) -> str | None:
        return self._health

    async def wait_idle(self) -> None:
        """Until no CI run is going (tests, shutdown)."""
        await self._ci.wait_idle()

    async def close(self) -> None:
        """Cancel the CI runs and remove their scratch worktrees."""
        await self._ci.close()

    # -- internals -------------------------------------------------------------------------

    def _count(self) -> None:
        self.calls += 1

    async def _git(
        self, cwd: Path, *args: str, check: bool = True, timeout: float = GIT_TIMEOUT_S
    ) -> Result:
        self.calls += 1
        try:
            return await git(cwd, *args, timeout=timeout, check=check)
        except CommandError as exc:
            raise ForgeError(str(exc)) from exc

    def _unavailable(self, message: str) -> ForgeUnavailableError:
        self._health = message
        return ForgeUnavailableError(message)

    async def _remote(self, repo: Path) -> Remote:
        got = await self._git(repo, "remote", "get-url", "origin", check=False)
        url = got.stdout.strip()
        if got.returncode != 0 or not url:
            raise self._unavailable(f"{repo} has no origin remote: {got.stderr.strip()}")
        path = _local_path(repo, url)
        if path is None or not _is_bare(path):
            raise self._unavailable(
                f"origin of {repo} is {url}, not a bare repository on this machine"
            )
        self._health = None
        found = Remote(path, self.state_of(path), repo)
        if found.store.legacy.exists():  # an earlier version's single state file
            async with self._locks.hold(path, path):
                found.store.split_legacy()
        return found

    def state_of(self, remote: Path) -> Path:
        """The directory of a remote's PR numbers, comments and CI results."""
        return self.state_dir / hashlib.sha256(str(remote).encode()).hexdigest()[:16]

    async def _refs(self, remote: Remote, *, merged: bool) -> Refs:
        listing = ["for-each-ref", "--format=%(HEAD) %(objectname) %(refname)", HEADS]
        contained = ["for-each-ref", "--merged=HEAD", "--format=%(refname)", HEADS]
        if merged:
            out, inside = await asyncio.gather(
                self._git(remote.path, *listing), self._git(remote.path, *contained, check=False)
            )
        else:
            out, inside = await self._git(remote.path, *listing), None
        heads: dict[str, str] = {}
        base = None
        for line in out.stdout.splitlines():
            sha, _, ref = line[2:].partition(" ")
            heads[ref.removeprefix(HEADS)] = sha
            if line.startswith("*"):
                base = ref.removeprefix(HEADS)
        if base is None:
            base = await self._fallback_base(remote, heads)
            if merged:
                inside = await self._git(remote.path, "for-each-ref", f"--merged={HEADS}{base}",
                                         "--format=%(refname)", HEADS, check=False)  # fmt: skip
        names = inside.stdout.split() if inside is not None and inside.returncode == 0 else []
        return Refs(heads, base, frozenset(n.removeprefix(HEADS) for n in names))

    async def _fallback_base(self, remote: Remote, heads: dict[str, str]) -> str:
        """A remote whose HEAD names a branch it does not have (`git init --bare` then a push
        of `main`): the base of the tasks that name none (the repository's default branch),
        else `main` or `master`, when the remote has it; said once per remote (a warning in
        the log, and `headless`)."""
        wanted = [await default_branch(remote.repo)] if remote.repo is not None else []
        found = next((b for b in [*wanted, "main", "master"] if b in heads), None)
        if found is None:
            raise self._unavailable(
                f"the remote {remote.path} has no HEAD branch, and none of "
                f"{', '.join(dict.fromkeys([*wanted, 'main', 'master']))} to use instead"
            )
        if self.headless.get(remote.path) != found:
            self.headless[remote.path] = found
            log.warning(
                "the remote %s has no HEAD branch (its HEAD names a branch it does not have); "
                "the local forge uses the tasks' base branch %r instead (set it with `git -C %s "
                "symbolic-ref HEAD refs/heads/%s`)", remote.path, found, remote.path, found,
            )  # fmt: skip
        return found

    async def _check_mergeable(
        self, remote: Remote, refs: Refs, records: Iterable[dict[str, Any]]
    ) -> None:
        todo: list[tuple[Path, str, str]] = []
        for record in records:
            base_sha, head = refs.heads.get(record["base"]), refs.heads.get(record["branch"])
            key = (remote.path, base_sha or "", head or "")
            if record["state"] == PrState.OPEN and base_sha and head and key not in self._mergeable:
                todo.append(key)
        todo = list(dict.fromkeys(todo))[: self.MERGE_CHECKS_PER_CALL]
        if len(self._mergeable) > 10_000:  # a long-lived engine: old pairs are never asked again
            self._mergeable.clear()
        results = await asyncio.gather(*(self._trial_merge(*key) for key in todo))
        for key, clean in zip(todo, results, strict=True):
            if clean is not None:
                self._mergeable[key] = clean

    async def _trial_merge(self, bare: Path, base_sha: str, head: str) -> bool | None:
        args = ("merge-tree", "--write-tree", "--no-messages", "--name-only", base_sha, head)
        result = await self._git(bare, *args, check=False)
        return {0: True, 1: False}.get(result.returncode)

    def _pull_request(self, remote: Remote, refs: Refs, record: dict[str, Any]) -> PullRequest:
        state = PrState(record["state"])
        head = record.get("head_sha")
        mergeable = None
        if state == PrState.OPEN:
            base_sha = refs.heads.get(record["base"], "")
            mergeable = self._mergeable.get((remote.path, base_sha, head or ""))
        return PullRequest(
            record["number"], record["branch"], record["base"], state, None, head, mergeable
        )

    async def _merge_in_scratch(
        self, remote: Remote, pr: int, base: str, branch: str, head: str, method: str
    ) -> MergeResult:
        await self._clear_stale(remote)
        tree = remote.scratch / f"merge-{pr}-{secrets.token_hex(3)}"
        remote.scratch.mkdir(parents=True, exist_ok=True)
        try:
            await self._git(remote.path, "worktree", "add", str(tree), base)
            if method == "merge":
                message = f"Merge PR #{pr}: {branch}"
                done = await self._git(
                    tree, *IDENTITY, "merge", "--no-ff", "-m", message, head, check=False
                )
            else:
                done = await self._git(tree, *IDENTITY, "merge", "--squash", head, check=False)
                if done.returncode == 0:
                    message = f"PR #{pr}: {branch} (squashed)"
                    done = await self._git(tree, *IDENTITY, "commit", "-m", message, check=False)
            if done.returncode == 0:
                sha = (await self._git(tree, "rev-parse", "HEAD")).stdout.strip()
                return MergeResult(True, sha=sha)
            unmerged = await self._git(tree, "diff", "--name-only", "-z", "--diff-filter=U")
            files = [name for name in unmerged.stdout.split("\0") if name]
            if method == "merge":
                await self._git(tree, "merge", "--abort", check=False)
            if files:
                return MergeResult(False, reason=f"conflict in: {', '.join(files)}")
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            return MergeResult(False, reason=f"git merge failed: {' | '.join(tail)}")
        finally:
            await remove_worktree(remote.path, tree, self._count)

    async def _clear_stale(self, remote: Remote) -> None:
        """Merge worktrees a crashed process left (we hold the merge lock: none is live), so
        the base branch is not 'already checked out' elsewhere."""
        stale = list(remote.scratch.glob("merge-*")) if remote.scratch.is_dir() else []
        for path in stale:
            await asyncio.to_thread(shutil.rmtree, path, True)
        if stale:
            await self._git(remote.path, "worktree", "prune", check=False)


def _local_path(repo: Path, url: str) -> Path | None:
    if url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            return None
        return Path(unquote(parsed.path)).resolve()
    if "://" in url or re.match(r"^[^/]+:", url):  # another scheme, or scp-like host:path
        return None
    path = Path(url).expanduser()
    return (path if path.is_absolute() else repo / path).resolve()


def _is_bare(path: Path) -> bool:
    try:
        config = (path / "config").read_text(errors="replace")
    except OSError:
        return False
    return (path / "HEAD").is_file() and (path / "objects").is_dir() and bool(_BARE.search(config))


def _get(remote: Remote, pr: int) -> dict[str, Any]:
    record = remote.store.get(pr)
    if record is None:
        raise ForgeError(f"no PR #{pr} on the local forge of {remote.path}")
    return record


def _track(store: PrStore, branch: str, refs: Refs) -> dict[str, Any] | None:
    """The PR record of `branch` brought up to date with the remote (new, merged, closed,
    reopened) and stored when it changed, or None when the branch is no PR."""
    if branch == refs.base:
        return None
    head = refs.heads.get(branch)
    ahead = head is not None and branch not in refs.merged
    number = store.number_of(branch)
    record = store.get(number) if number else None
    before = json.dumps(record, sort_keys=True)
    result: dict[str, Any] | None = record
    if record is None or (
        record["state"] == PrState.MERGED and ahead and head != record["head_sha"]
    ):
        if not ahead:
            return None  # no PR yet, or a merged one whose branch got new commits
        number = store.allocate(branch)
        record = {"number": number, "branch": branch, "base": refs.base, "state": "open"}
        record.update(head_sha=head, created_at=now_iso(), comments=[])
        result = record
    elif record["state"] == PrState.CLOSED:
        if not ahead:
            return None
        record.update(state=PrState.OPEN.value, head_sha=head)
    elif record["state"] == PrState.OPEN:
        if head is None:  # the branch was deleted without a merge
            record.update(state=PrState.CLOSED.value, closed_at=now_iso())
            result = None
        else:
            if not ahead:  # its head reached the base by other means than our merge
                record.update(state=PrState.MERGED.value, head_sha=head, merged_at=now_iso())
            record["head_sha"] = head
    if json.dumps(record, sort_keys=True) != before:
        store.put(record)
    return result
