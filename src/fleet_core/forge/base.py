"""The forge protocol the monitor and the conductor use, and the values it returns.

Every method takes many branches or PRs at once, so the monitor's forge calls per cycle stay
flat as the fleet grows (GitHub: one GraphQL query per batch of up to 50). `calls` counts the
external calls made (gh invocations, or git commands for the local forge) for tests and the
benchmark. `health()` is None when the forge works, else a one-line message (gh missing,
unauthenticated, rate-limited until ...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from fleet_core.errors import FleetError
from fleet_core.models import CiStatus

BATCH = 50  # branches or PRs per forge call


class PrState(StrEnum):
    OPEN = "open"
    MERGED = "merged"
    CLOSED = "closed"


class ReviewState(StrEnum):
    APPROVED = "approved"
    CHANGES_REQUESTED = "changes_requested"
    REVIEW_REQUIRED = "review_required"
    NONE = "none"


@dataclass(frozen=True)
class PullRequest:
    number: int
    branch: str
    base: str
    state: PrState
    url: str | None = None
    head_sha: str | None = None
    mergeable: bool | None = None  # False: conflicts with the base; None: not known yet


@dataclass(frozen=True)
class CiReport:
    """CI and review of one PR, aggregated: failing if any check failed, else pending if any
    is still running (or none reported yet), else passing."""

    pr_number: int
    state: CiStatus
    failing: tuple[str, ...] = ()  # names of the failing checks
    log_excerpt: str | None = None  # the end of a failing check's output, when the forge has it
    url: str | None = None  # where the checks can be read
    review: ReviewState = ReviewState.NONE
    head_sha: str | None = None
    pr_state: PrState | None = None  # merged: the forge merged it (whoever asked)
    no_checks: bool = False  # pending because no check has started at all (GitHub)


@dataclass(frozen=True)
class ForgeBudget:
    remaining: int | None = None  # API calls left in the window (None: not limited / unknown)
    limit: int | None = None
    reset_at: datetime | None = None
    paused_until: datetime | None = None  # calls are held back until then


@dataclass(frozen=True)
class MergeResult:
    merged: bool
    sha: str | None = None  # the merge commit on the base branch
    reason: str | None = None  # why not (conflict, not mergeable, ...)


class ForgeError(FleetError):
    code = "forge_error"


class ForgeUnavailableError(ForgeError):
    """The forge cannot be used at all (gh missing or not logged in, no remote)."""

    code = "forge_unavailable"


class ForgePausedError(ForgeError):
    """Rate-limited: no calls until `until`."""

    code = "forge_paused"

    def __init__(self, message: str, until: datetime) -> None:
        super().__init__(message)
        self.until = until


class Forge(Protocol):
    name: str
    calls: int

    async def find_prs(self, repo: Path, branches: Sequence[str]) -> dict[str, PullRequest]:
        """Open or merged PRs whose head is one of `branches` (branch → PR); absent when none."""
        ...

    async def ci_status(self, repo: Path, prs: Sequence[int]) -> dict[int, CiReport]:
        """CI and review state of each PR."""
        ...

    async def poll(
        self, repo: Path, branches: Sequence[str], prs: Sequence[int]
    ) -> tuple[dict[str, PullRequest], dict[int, CiReport]]:
        """`find_prs` and `ci_status` at once (what the monitor asks every cycle)."""
        ...

    async def diff(self, repo: Path, pr: int) -> str: ...

    async def behind(self, repo: Path, base: str, head: str) -> int:
        """How many commits the branch `base` has that `head` (a branch or a commit) lacks."""
        ...

    async def open_pr(
        self, repo: Path, branch: str, base: str, title: str, body: str
    ) -> PullRequest | None:
        """Open a PR for a pushed branch (the engine does, agents never); None for a forge
        whose PRs need no opening (the local forge: a pushed branch ahead of its base is one)."""
        ...

    async def comment(self, repo: Path, pr: int, body: str) -> None: ...

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
        """A reviewer's verdict (approve, request_changes, comment) with its line comments
        ({path, line, body}: a line of the PR head's version of the file)."""
        ...

    async def merge(self, repo: Path, pr: int, *, method: str = "merge") -> MergeResult:
        """Merge into the PR's base; a conflict is a MergeResult with merged=False, never
        forced. `method`: merge, squash or rebase."""
        ...

    def budget(self) -> ForgeBudget: ...

    def health(self) -> str | None: ...


def review_text(body: str, comments: Sequence[Mapping[str, Any]]) -> str:
    """A review as one text: its body, then each line comment as "- `path:line` body"."""
    lines = [f"- `{c['path']}:{c['line']}` {c['body']}" for c in comments]
    return "\n".join([body, *lines]) if lines else body
