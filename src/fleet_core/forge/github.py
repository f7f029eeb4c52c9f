"""GitHub through the `gh` CLI: PRs opened, commented, reviewed and merged, and the calls
themselves.

Every call is made ready first (`gh` installed and logged in: one `gh auth status` every few
minutes; not paused) and runs with a timeout. Values travel as GraphQL variables (`-f`/`-F`),
never inside the query text. A rate-limit answer pauses every call until GitHub's reset time.
Reading PRs and their CI is batched so the calls per monitor cycle stay flat
(fleet_core.forge.github_ci); a review with line comments goes through the REST API
(fleet_core.forge.github_review).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fleet_core.errors import BadInputError
from fleet_core.forge.base import (
    CiReport,
    ForgeBudget,
    ForgeError,
    ForgePausedError,
    ForgeUnavailableError,
    MergeResult,
    PrState,
    PullRequest,
)
from fleet_core.runtime.proc import CommandError, Result, run

MISSING = "gh is not installed: PR and CI checks are off (liveness checks go on)"
NOT_LOGGED_IN = (
    "gh is not logged in (run `gh auth login`): PR and CI checks are off (liveness checks go on)"
)
AUTH_TTL = timedelta(minutes=5)
DEFAULT_PAUSE = timedelta(seconds=60)
MERGE_METHODS = ("merge", "squash", "rebase")

_REMOTE = re.compile(
    r"^(?:https?://(?:[^@/]+@)?github\.com/|git@github\.com:|ssh://git@github\.com(?::\d+)?/)"
    r"([\w.-]+)/([\w.-]+?)(?:\.git)?/?$"
)
_RATE_LIMITED = re.compile(
    r"rate limit|RATE_LIMITED|HTTP 429|^HTTP/\S+ 429|^x-ratelimit-remaining: *0\r?$", re.I | re.M
)
_NOT_MERGEABLE = re.compile(r"not mergeable|conflict", re.I)


def parse_remote(url: str) -> tuple[str, str] | None:
    """(owner, name) of a github.com remote URL (https, scp-like or ssh), else None."""
    m = _REMOTE.match(url.strip())
    return (m[1], m[2]) if m else None


class GitHubForge:
    name = "github"

    def __init__(
        self,
        *,
        gh: str = "gh",
        env: Mapping[str, str] | None = None,
        timeout_s: float = 30.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        merge_method: str = "merge",
    ) -> None:
        self.calls = 0
        self._gh_name = gh
        self._env = dict(os.environ if env is None else env)
        self._gh_env = {**self._env, "GH_PROMPT_DISABLED": "1", "NO_COLOR": "1"}
        self._timeout = timeout_s
        self._clock = clock
        self._merge_method = _check_method(merge_method)
        self._gh_path: str | None = None
        self._auth: tuple[datetime, bool] | None = None  # when checked, logged in
        self._auth_lock = asyncio.Lock()
        self._slugs: dict[Path, tuple[str, str]] = {}
        self._prefetched: dict[tuple[str, str, int], tuple[datetime, CiReport]] = {}
        self._budget = ForgeBudget()
        self._paused_until: datetime | None = None

    async def find_prs(self, repo: Path, branches: Sequence[str]) -> dict[str, PullRequest]:
        return (await self.poll(repo, branches, []))[0]

    async def ci_status(self, repo: Path, prs: Sequence[int]) -> dict[int, CiReport]:
        """CI and review of each PR (fleet_core.forge.github_ci)."""
        from fleet_core.forge.github_ci import ci_status

        return await ci_status(self, repo, prs)

    async def poll(
        self, repo: Path, branches: Sequence[str], prs: Sequence[int]
    ) -> tuple[dict[str, PullRequest], dict[int, CiReport]]:
        """PRs of `branches` and CI of `prs`, batched (fleet_core.forge.github_ci)."""
        from fleet_core.forge.github_ci import poll

        return await poll(self, repo, branches, prs)

    async def diff(self, repo: Path, pr: int) -> str:
        return (await self._pr(repo, "diff", pr)).stdout

    async def behind(self, repo: Path, base: str, head: str) -> int:
        """REST's compare (`behind_by`): GraphQL's Ref.compare would need a query per PR too."""
        gh = await self._ready()
        owner, name = await self._slug(repo)
        spec = f"{quote(base, safe='/')}...{quote(head, safe='/')}"
        result = await self._exec(gh, ["api", f"repos/{owner}/{name}/compare/{spec}"])
        behind = _obj(_json_body(result.stdout) if result.returncode == 0 else None).get(
            "behind_by"
        )
        if not isinstance(behind, int):
            raise ForgeError(f"gh api compare {base}...{head}: {_tail(result)}")
        return behind

    async def open_pr(
        self, repo: Path, branch: str, base: str, title: str, body: str
    ) -> PullRequest | None:
        """`gh pr create` for a branch the engine pushed; its URL gives the number."""
        gh = await self._ready()
        owner, name = await self._slug(repo)
        args = ["pr", "create", "-R", f"{owner}/{name}", "--head", branch, "--base", base,
                "--title", title, "--body-file", "-"]  # fmt: skip
        result = await self._exec(gh, args, body.encode())
        url = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
        number = url.rsplit("/", 1)[-1]
        if result.returncode != 0 or not number.isdigit():
            raise ForgeError(f"gh pr create --head {branch}: {_tail(result)}")
        return PullRequest(int(number), branch, base, PrState.OPEN, url=url)

    async def comment(self, repo: Path, pr: int, body: str) -> None:
        await self._pr(repo, "comment", pr, "--body-file", "-", stdin=body.encode())

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
        """A PR review with line comments (fleet_core.forge.github_review)."""
        from fleet_core.forge.github_review import post_review

        await post_review(self, repo, pr, verdict=verdict, body=body, comments=comments,
                          head_sha=head_sha)  # fmt: skip

    async def merge(self, repo: Path, pr: int, *, method: str | None = None) -> MergeResult:
        """A PR merged already (an earlier call whose caller then failed) is merged: the
        answer is the same as for the call that merged it."""
        flag = f"--{_check_method(method or self._merge_method)}"
        result = await self._pr(repo, "merge", pr, flag)
        owner, name = await self._slug(repo)
        self._prefetched.pop((owner, name, pr), None)
        if result.returncode != 0:
            output = (result.stderr.strip() or result.stdout.strip()).splitlines()
            refusal = [line for line in output if _NOT_MERGEABLE.search(line)]
            if refusal:
                return MergeResult(False, reason=refusal[0].lstrip("X! ").strip())
            info = await self._merge_state(repo, pr)
            if info is not None and info.get("state") == "MERGED":
                sha = _obj(info.get("mergeCommit")).get("oid")
                return MergeResult(True, sha=sha, reason="already merged")
            raise ForgeError(f"gh pr merge {pr}: {_tail(result)}")
        info = await self._merge_state(repo, pr)  # the merge commit; a merge stays a merge
        if info is None:
            return MergeResult(True)
        if info.get("state") != "MERGED":
            return MergeResult(False, reason="added to the merge queue; not merged yet")
        return MergeResult(True, sha=_obj(info.get("mergeCommit")).get("oid"))

    async def _merge_state(self, repo: Path, pr: int) -> dict[str, Any] | None:
        """`gh pr view --json state,mergeCommit`, or None when it cannot be read."""
        try:
            view = await self._pr(repo, "view", pr, "--json", "state,mergeCommit")
            return _obj(json.loads(view.stdout))
        except (ForgeError, ValueError):
            return None

    def budget(self) -> ForgeBudget:
        return replace(self._budget, paused_until=self._paused())

    def health(self) -> str | None:
        if self._which() is None:
            return MISSING
        if (until := self._paused()) is not None:
            return _pause_message(until)
        return NOT_LOGGED_IN if self._auth is not None and not self._auth[1] else None

    async def _ready(self) -> str:
        """The gh path, once paused, missing and logged-out have been ruled out."""
        if (until := self._paused()) is not None:
            raise ForgePausedError(_pause_message(until), until)
        gh = self._which()
        if gh is None:
            raise ForgeUnavailableError(MISSING)
        async with self._auth_lock:
            if self._auth is None or self._clock() - self._auth[0] > AUTH_TTL:
                result = await self._exec(gh, ["auth", "status"])
                self._auth = (self._clock(), result.returncode == 0)
        if not self._auth[1]:
            raise ForgeUnavailableError(NOT_LOGGED_IN)
        return gh

    def _which(self) -> str | None:
        if self._gh_path is None:
            self._gh_path = shutil.which(self._gh_name, path=self._env.get("PATH", os.defpath))
        return self._gh_path

    async def _exec(self, gh: str, args: Sequence[str], stdin: bytes | None = None) -> Result:
        self.calls += 1
        try:
            result = await run(
                [gh, *args], env=self._gh_env, timeout=self._timeout, check=False, stdin=stdin
            )
        except CommandError as e:  # timed out
            raise ForgeError(f"gh {' '.join(args[:2])}: {e}") from e
        except OSError as e:
            self._gh_path = None
            raise ForgeUnavailableError(f"{MISSING} ({e})") from e
        headers = _split(result.stdout)[0]  # not the body: a check may be named "rate limit"
        if result.returncode != 0 and _RATE_LIMITED.search(headers + result.stderr):
            self._paused_until = self._reset_time(result.stdout + result.stderr)
            raise ForgePausedError(_pause_message(self._paused_until), self._paused_until)
        return result

    async def _pr(
        self, repo: Path, verb: str, pr: int, *extra: str, stdin: bytes | None = None
    ) -> Result:
        """`gh pr VERB N -R owner/name ...`; a failure raises, except merge's (a refusal)."""
        gh = await self._ready()
        owner, name = await self._slug(repo)
        args = ["pr", verb, str(int(pr)), "-R", f"{owner}/{name}", *extra]
        result = await self._exec(gh, args, stdin)
        if verb != "merge" and result.returncode != 0:
            raise ForgeError(f"gh pr {verb} {pr}: {_tail(result)}")
        return result

    async def _graphql(
        self,
        owner: str,
        name: str,
        variables: Sequence[tuple[str, str, str, str]],
        fields: str,
    ) -> dict[str, Any]:
        """Run one query with `variables` (name, GraphQL type, gh flag, value): values travel
        as variables, never inside the query text. Returns its `repository` object."""
        decl = "".join(f", ${var}: {type_}" for var, type_, _, _ in variables)
        query = (
            f"query($owner: String!, $name: String!{decl}) {{ "
            f"repository(owner: $owner, name: $name) {{ {fields} }} "
            "rateLimit { remaining limit resetAt } }"
        )
        args = ["api", "graphql", "--include", "-f", f"query={query}"]
        args += ["-f", f"owner={owner}", "-f", f"name={name}"]
        for var, _, flag, value in variables:
            args += [flag, f"{var}={value}"]
        result = await self._exec(await self._ready(), args)
        data = _obj(_obj(_json_body(result.stdout)).get("data"))
        self._note_budget(_obj(data.get("rateLimit")))
        repository = data.get("repository")
        if not isinstance(repository, dict):  # partial answers (a PR not found) still count
            raise ForgeError(f"GitHub query for {owner}/{name} failed: {_tail(result)}")
        return repository

    async def _slug(self, repo: Path) -> tuple[str, str]:
        if repo not in self._slugs:
            argv = ["git", "-C", str(repo), "remote", "get-url", "origin"]
            try:
                result = await run(argv, env=self._env, timeout=self._timeout)
            except (CommandError, OSError) as e:
                raise ForgeUnavailableError(f"{repo}: no origin remote ({e})") from e
            slug = parse_remote(result.stdout)
            if slug is None:
                raise ForgeUnavailableError(f"{repo}: origin is not on github.com")
            self._slugs[repo] = slug
        return self._slugs[repo]

    def _paused(self) -> datetime | None:
        if self._paused_until is not None and self._clock() >= self._paused_until:
            self._paused_until = None
        return self._paused_until

    def _note_budget(self, rate: dict[str, Any]) -> None:
        if not rate:
            return
        reset = _parse_time(rate.get("resetAt"))
        self._budget = ForgeBudget(rate.get("remaining"), rate.get("limit"), reset)
        if rate.get("remaining") == 0 and reset is not None:
            self._paused_until = reset

    def _reset_time(self, text: str) -> datetime:
        now = self._clock()
        until: datetime | None = None
        if m := re.search(r"^retry-after: *(\d+)", text, re.I | re.M):
            until = now + timedelta(seconds=int(m[1]))
        elif m := re.search(r"^x-ratelimit-reset: *(\d+)", text, re.I | re.M):
            until = datetime.fromtimestamp(int(m[1]), UTC)
        elif m := re.search(r'"resetAt" *: *"([^"]+)"', text):
            until = _parse_time(m[1])
        return until if until is not None and until > now else now + DEFAULT_PAUSE


def _split(stdout: str) -> tuple[str, str]:
    """(status line and headers, body) of what `gh api --include` prints."""
    if not stdout.startswith("HTTP/"):
        return "", stdout
    head, sep, body = stdout.partition("\n\r\n")  # headers end with an empty CRLF line
    return (head, body) if sep else (stdout, "")


def _json_body(stdout: str) -> Any:
    try:
        return json.loads(_split(stdout)[1])
    except ValueError:
        return None


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)).astimezone(UTC) if value else None
    except ValueError:
        return None


def _pause_message(until: datetime) -> str:
    return f"GitHub rate limit reached: paused until {until.astimezone(UTC):%H:%M:%S} UTC"


def _tail(result: Result) -> str:
    lines = (result.stderr.strip() or result.stdout.strip()).splitlines()
    return " | ".join(lines[-3:]) or f"exit {result.returncode}"


def _check_method(method: str) -> str:
    if method not in MERGE_METHODS:
        raise BadInputError("method", f"merge method must be one of {', '.join(MERGE_METHODS)}")
    return method
