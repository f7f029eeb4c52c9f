"""CI of GitHub pull requests, read in batches so the calls per monitor cycle stay flat.

A PR's CI is its head commit's status check rollup: check runs (GitHub Actions and other
apps) and commit statuses, with the PR's review decision. `poll` asks for up to 50 branches
and PRs in one GraphQL query: a branch's newest open or merged PR comes with its checks and
review in the same query, so `ci_status` serves those (once, while fresh) and queries only the
PRs it has not seen, 50 per query. So a cycle of find_prs + ci_status over N branches costs
⌈N/50⌉ gh calls (github.py: the `gh` calls themselves, auth, rate limits).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet_core.forge.base import BATCH, CiReport, PrState, PullRequest, ReviewState
from fleet_core.forge.github import _obj
from fleet_core.models import CiStatus

if TYPE_CHECKING:
    from fleet_core.forge.github import GitHubForge

PREFETCH_TTL = timedelta(seconds=20)  # ci_status reuses find_prs' answer only this long
CONCURRENT_CALLS = 10  # batch queries in flight at once (GitHub's secondary limit: 100)

_CHECK_FAILED = {"FAILURE", "TIMED_OUT", "CANCELLED", "ACTION_REQUIRED", "STARTUP_FAILURE"}
_CONTEXT_FAILED = {"FAILURE", "ERROR"}
_CONTEXT_WAITING = {"PENDING", "EXPECTED"}
_PR_STATE = {s.name: s for s in PrState}  # GitHub's OPEN, MERGED, CLOSED
_REVIEW = {s.name: s for s in ReviewState}  # APPROVED, CHANGES_REQUESTED, REVIEW_REQUIRED
_MERGEABLE = {"MERGEABLE": True, "CONFLICTING": False}  # UNKNOWN: None
_CI_FIELDS = (
    "headRefOid reviewDecision commits(last: 1) { nodes { commit { statusCheckRollup { state "
    "contexts(first: 100) { nodes { __typename "
    "... on CheckRun { name status conclusion detailsUrl } "
    "... on StatusContext { context state targetUrl } } } } } } }"
)
_PR_FIELDS = f"number url state baseRefName headRefName mergeable {_CI_FIELDS}"


async def ci_status(forge: GitHubForge, repo: Path, prs: Sequence[int]) -> dict[int, CiReport]:
    """CI and review of each PR; PRs that `find_prs` just saw come from its answer."""
    await forge._ready()
    owner, name = await forge._slug(repo)
    now = forge._clock()
    reports: dict[int, CiReport] = {}
    missing: list[int] = []
    for number in dict.fromkeys(prs):
        hit = forge._prefetched.pop((owner, name, number), None)
        if hit is not None and now - hit[0] <= PREFETCH_TTL:
            reports[number] = hit[1]
        else:
            missing.append(number)
    if missing:
        reports.update((await poll(forge, repo, [], missing))[1])
    return reports


async def poll(
    forge: GitHubForge, repo: Path, branches: Sequence[str], prs: Sequence[int]
) -> tuple[dict[str, PullRequest], dict[int, CiReport]]:
    """PRs of `branches` and CI of `prs` together: one query per BATCH of either, so a
    cycle costs ceil((branches + prs) / 50) calls."""
    await forge._ready()
    owner, name = await forge._slug(repo)
    found: dict[str, PullRequest] = {}
    reports: dict[int, CiReport] = {}
    items: list[tuple[str, str | int]] = [("b", b) for b in dict.fromkeys(branches)]
    items += [("p", int(n)) for n in dict.fromkeys(prs)]

    async def batch(chunk: list[tuple[str, str | int]]) -> None:
        fields: list[str] = []
        variables: list[tuple[str, str, str, str]] = []
        for i, (kind, value) in enumerate(chunk):
            if kind == "b":
                fields.append(
                    f"b{i}: pullRequests(headRefName: $h{i}, first: 1, states: [OPEN, MERGED]"
                    f", orderBy: {{field: CREATED_AT, direction: DESC}}) "
                    f"{{ nodes {{ {_PR_FIELDS} }} }}"
                )
                variables.append((f"h{i}", "String!", "-f", str(value)))
            else:
                fields.append(
                    f"p{i}: pullRequest(number: $n{i}) {{ number url state {_CI_FIELDS} }}"
                )
                variables.append((f"n{i}", "Int!", "-F", str(value)))
        data = await forge._graphql(owner, name, variables, " ".join(fields))
        now = forge._clock()
        for i, (kind, value) in enumerate(chunk):
            if kind == "p":
                node = data.get(f"p{i}")
                if isinstance(node, dict):
                    reports[int(value)] = _report(node)
                continue
            nodes = _list(_obj(data.get(f"b{i}")).get("nodes"))
            if not nodes:
                continue
            node = _obj(nodes[0])
            pr = PullRequest(
                number=int(node["number"]),
                branch=str(value),
                base=str(node.get("baseRefName") or ""),
                state=_PR_STATE.get(str(node.get("state")), PrState.OPEN),
                url=node.get("url"),
                head_sha=node.get("headRefOid"),
                mergeable=_MERGEABLE.get(str(node.get("mergeable"))),
            )
            found[str(value)] = pr
            forge._prefetched[(owner, name, pr.number)] = (now, _report(node))

    await _batches(batch, items)
    return found, reports


async def _batches(batch: Callable[[list[Any]], Awaitable[None]], items: list[Any]) -> None:
    """One call per BATCH items, at most CONCURRENT_CALLS at a time (GitHub asks clients
    not to fire many at once; a few keep a large fleet's cycle short)."""
    gate = asyncio.Semaphore(CONCURRENT_CALLS)

    async def one(chunk: list[Any]) -> None:
        async with gate:
            await batch(chunk)

    await asyncio.gather(*(one(chunk) for chunk in _chunks(items)))


def _report(node: dict[str, Any]) -> CiReport:
    commits = _list(_obj(node.get("commits")).get("nodes"))
    rollup = _obj(_obj(_obj(commits[0]).get("commit")).get("statusCheckRollup")) if commits else {}
    checks = [_obj(c) for c in _list(_obj(rollup.get("contexts")).get("nodes"))]
    failing: list[tuple[str, str | None]] = []
    waiting = not checks
    for check in checks:
        if check.get("__typename") == "StatusContext":
            label, url, state = check.get("context"), check.get("targetUrl"), check.get("state")
            bad, done = state in _CONTEXT_FAILED, state not in _CONTEXT_WAITING
        else:
            label, url = check.get("name"), check.get("detailsUrl")
            bad, done = check.get("conclusion") in _CHECK_FAILED, check.get("status") == "COMPLETED"
        if bad:
            failing.append((str(label), url))
        waiting = waiting or not done
    overall = rollup.get("state")
    if failing or overall in _CONTEXT_FAILED:
        state = CiStatus.FAILING
    elif waiting or overall in _CONTEXT_WAITING:
        state = CiStatus.PENDING
    else:
        state = CiStatus.PASSING
    return CiReport(
        pr_number=int(node["number"]),
        state=state,
        failing=tuple(label for label, _ in failing),
        url=next((u for _, u in failing if u), None) or node.get("url"),
        review=_REVIEW.get(str(node.get("reviewDecision")), ReviewState.NONE),
        head_sha=node.get("headRefOid"),
        pr_state=_PR_STATE.get(str(node.get("state"))),
        no_checks=not checks and overall is None,
    )


def _chunks(items: list[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), BATCH):
        yield items[start : start + BATCH]


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []
