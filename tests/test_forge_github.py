"""GitHubForge against a fake `gh` (tests/fake_gh/gh): flat call counts at scale, CI
aggregation, rate-limit pauses, a missing or logged-out gh, comments via stdin, merges."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from fleet_core.forge.base import (
    ForgeError,
    ForgePausedError,
    ForgeUnavailableError,
    PrState,
    ReviewState,
)
from fleet_core.forge.github import MISSING, NOT_LOGGED_IN, GitHubForge, parse_remote
from fleet_core.models import CiStatus

FAKE_DIR = Path(__file__).parent / "fake_gh"
OK = {"name": "test", "status": "COMPLETED", "conclusion": "SUCCESS"}


@dataclass
class World:
    state: Path
    log: Path
    env: dict[str, str]
    repo: Path

    def write(self, world: dict[str, Any]) -> None:
        self.state.write_text(json.dumps(world))

    def read(self) -> dict[str, Any]:
        return json.loads(self.state.read_text())

    def update(self, **changes: Any) -> None:
        self.write({**self.read(), **changes})

    def calls(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines()]


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


def pr(number: int, branch: str, **extra: Any) -> dict[str, Any]:
    return {"number": number, "branch": branch, "base": "main", "state": "OPEN", **extra}


@pytest.fixture
def world(tmp_path: Path) -> World:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    subprocess.run(
        ["git", "-C", str(repo), "remote", "add", "origin", "https://github.com/acme/widgets.git"],
        check=True,
    )
    env = {
        **os.environ,
        "PATH": f"{FAKE_DIR}:{os.environ['PATH']}",
        "FAKE_GH_STATE": str(tmp_path / "world.json"),
        "FAKE_GH_LOG": str(tmp_path / "gh.log"),
    }
    w = World(tmp_path / "world.json", tmp_path / "gh.log", env, repo)
    w.write({"repo": "acme/widgets", "logged_in": True, "prs": []})
    return w


def gh_graphql(world: World, query: str, **variables: str) -> tuple[int, dict[str, Any]]:
    """The fake gh's answer to a raw GraphQL query (exit code, body)."""
    args = ["gh", "api", "graphql", "-f", f"query={query}"]
    for name, value in variables.items():
        args += ["-f", f"{name}={value}"]
    done = subprocess.run(args, env=world.env, capture_output=True, text=True, timeout=60)
    return done.returncode, json.loads(done.stdout)


def test_the_fake_answers_only_what_a_query_selects_and_refuses_unknown_fields(
    world: World,
) -> None:
    world.update(prs=[pr(3, "fleet/a", checks=[OK])])
    head = (
        "query($owner: String!, $name: String!, $n: Int!) { repository(owner: $owner, name: $name)"
    )
    code, body = gh_graphql(world, head + " { pullRequest(number: $n) { number state } } }",
                            owner="acme", name="widgets", n="3")  # fmt: skip
    assert code != 0  # $n travels with -f: a string, not the Int! it is declared as
    assert "$n" in body["errors"][0]["message"] and "data" not in body
    query = head.replace(", $n: Int!", "") + " { pullRequest(number: 3) { number } } }"
    code, body = gh_graphql(world, query, owner="acme", name="widgets")
    assert (code, body["data"]) == (0, {"repository": {"pullRequest": {"number": 3}}})
    misspelt = head.replace(", $n: Int!", "") + " { pullRequest(number: 3) { number headRefOd } } }"
    code, body = gh_graphql(world, misspelt, owner="acme", name="widgets")
    assert code != 0 and "data" not in body
    assert body["errors"][0]["message"].startswith(
        "Cannot query field 'headRefOd' on type 'PullRequest'."
    )


def scaled_world(n: int) -> tuple[list[str], list[dict[str, Any]]]:
    """n branches; every 7th has no PR, the rest cycle through CI/review situations."""
    branches = [f"fleet/task-{i:04d}" for i in range(n)]
    prs = []
    for i, branch in enumerate(branches):
        if i % 7 == 6:
            continue
        kind = i % 7
        checks: list[dict[str, Any]] = [OK, {"context": "ci/legacy", "state": "SUCCESS"}]
        extra: dict[str, Any] = {}
        if kind == 1:
            checks = [OK, {"name": "lint", "status": "COMPLETED", "conclusion": "FAILURE"}]
        elif kind == 2:
            checks = [OK, {"name": "build", "status": "IN_PROGRESS", "conclusion": None}]
        elif kind == 3:
            extra = {"review": "CHANGES_REQUESTED"}
        elif kind == 4:
            extra = {"conflicting": True, "review": "APPROVED"}
        elif kind == 5:
            extra = {"state": "MERGED"}
        prs.append(pr(1000 + i, branch, checks=checks, **extra))
    return branches, prs


@pytest.mark.parametrize("n", [10, 100, 500])
async def test_calls_stay_flat_and_results_are_right(world: World, n: int) -> None:
    branches, prs = scaled_world(n)
    prs.append(pr(1, branches[0], state="CLOSED"))  # an older, closed PR is not reported
    world.update(prs=prs)
    forge = GitHubForge(env=world.env)

    found = await forge.find_prs(world.repo, branches)
    reports = await forge.ci_status(world.repo, [p.number for p in found.values()])

    budget = math.ceil(n / 50) + 1
    assert len(world.calls()) == forge.calls <= budget
    assert set(found) == {b for i, b in enumerate(branches) if i % 7 != 6}
    for i, branch in enumerate(branches):
        if i % 7 == 6:
            continue
        got, report = found[branch], reports[1000 + i]
        assert (got.number, got.branch, got.base) == (1000 + i, branch, "main")
        assert got.url == f"https://github.com/acme/widgets/pull/{1000 + i}"
        assert got.state == (PrState.MERGED if i % 7 == 5 else PrState.OPEN)
        assert got.mergeable is (i % 7 != 4)
        assert report.head_sha == got.head_sha is not None
        expected = {1: CiStatus.FAILING, 2: CiStatus.PENDING}.get(i % 7, CiStatus.PASSING)
        assert report.state == expected, (i, report)
        assert report.failing == (("lint",) if i % 7 == 1 else ())
        assert report.log_excerpt is None
        review = {3: ReviewState.CHANGES_REQUESTED, 4: ReviewState.APPROVED}
        assert report.review == review.get(i % 7, ReviewState.NONE)
        if i % 7 == 1:
            assert report.url == f"https://github.com/acme/widgets/pull/{1000 + i}/checks/1"


@pytest.mark.parametrize("n", [10, 120])
async def test_ci_status_on_its_own_is_one_call_per_50(world: World, n: int) -> None:
    prs = scaled_world(n)[1]
    world.update(prs=prs)
    forge = GitHubForge(env=world.env)
    numbers = [p["number"] for p in prs] + [99999]  # an unknown PR is left out, not fatal
    reports = await forge.ci_status(world.repo, numbers)
    assert set(reports) == {p["number"] for p in prs}
    assert len(world.calls()) == math.ceil(len(numbers) / 50) + 1
    assert world.calls()[0] == ["auth", "status"]


async def test_ci_status_after_find_prs_is_fresh_next_time(world: World) -> None:
    waiting = {"name": "build", "status": "IN_PROGRESS", "conclusion": None}
    world.update(prs=[pr(7, "fleet/a", checks=[waiting])])
    forge = GitHubForge(env=world.env)
    await forge.find_prs(world.repo, ["fleet/a"])
    assert (await forge.ci_status(world.repo, [7]))[7].state == CiStatus.PENDING
    world.update(prs=[pr(7, "fleet/a", checks=[OK])])
    assert (await forge.ci_status(world.repo, [7]))[7].state == CiStatus.PASSING
    assert len(world.calls()) == 3


async def test_no_checks_is_pending_and_status_contexts_count(world: World) -> None:
    world.update(
        prs=[
            pr(1, "fleet/none"),
            pr(2, "fleet/ctx", checks=[OK, {"context": "ci/jenkins", "state": "ERROR"}]),
            pr(3, "fleet/wait", checks=[{"context": "ci/jenkins", "state": "PENDING"}]),
            pr(4, "fleet/neutral", checks=[{**OK, "conclusion": "SKIPPED"}]),
            pr(5, "fleet/cancel", checks=[{**OK, "name": "e2e", "conclusion": "CANCELLED"}]),
        ]
    )
    reports = await GitHubForge(env=world.env).ci_status(world.repo, [1, 2, 3, 4, 5])
    assert reports[1].state == CiStatus.PENDING
    assert (reports[2].state, reports[2].failing) == (CiStatus.FAILING, ("ci/jenkins",))
    assert reports[3].state == CiStatus.PENDING
    assert reports[4].state == CiStatus.PASSING
    assert (reports[5].state, reports[5].failing) == (CiStatus.FAILING, ("e2e",))


async def test_words_in_the_answer_body_are_not_a_rate_limit(world: World) -> None:
    check = {**OK, "name": "API rate limit exceeded check", "conclusion": "FAILURE"}
    world.update(prs=[pr(1, "fleet/a", checks=[check])])
    forge = GitHubForge(env=world.env)
    reports = await forge.ci_status(world.repo, [1, 404])  # 404: gh exits 1, partial answer
    assert reports[1].failing == ("API rate limit exceeded check",)
    assert forge.budget().paused_until is None and forge.health() is None


async def test_values_travel_as_variables(world: World) -> None:
    odd = ['fleet/a"b}{c', "@etc/passwd", "fleet/$h1"]
    world.update(prs=[pr(10 + i, b) for i, b in enumerate(odd)])
    forge = GitHubForge(env=world.env)
    found = await forge.find_prs(world.repo, odd)
    assert {b: p.number for b, p in found.items()} == {odd[0]: 10, odd[1]: 11, odd[2]: 12}
    argv = world.calls()[-1]
    query = next(a for a in argv if a.startswith("query="))
    for i, branch in enumerate(odd):
        assert branch not in query
        at = argv.index(f"h{i}={branch}")
        assert argv[at - 1] == "-f"  # raw string: no -F magic (@file, numbers)
    await GitHubForge(env=world.env).ci_status(world.repo, [10, 11])  # nothing prefetched
    argv = world.calls()[-1]
    assert argv[argv.index("n0=10") - 1] == "-F"  # an Int! variable


async def test_rate_limit_pauses_every_call_until_reset(world: World) -> None:
    reset = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
    world.update(prs=[pr(1, "fleet/a", checks=[OK])], rate_limited_until=reset.isoformat())
    clock = Clock()
    forge = GitHubForge(env=world.env, clock=clock)

    with pytest.raises(ForgePausedError) as caught:
        await forge.find_prs(world.repo, ["fleet/a"])
    assert caught.value.until == reset
    calls = len(world.calls())
    assert calls == 2  # auth status, the query that was refused

    attempts = [
        forge.find_prs(world.repo, ["fleet/a"]),
        forge.ci_status(world.repo, [1]),
        forge.diff(world.repo, 1),
        forge.comment(world.repo, 1, "hi"),
        forge.merge(world.repo, 1),
    ]
    for attempt in attempts:
        with pytest.raises(ForgePausedError):
            await attempt
    assert len(world.calls()) == calls == forge.calls
    message = f"GitHub rate limit reached: paused until {reset:%H:%M:%S} UTC"
    assert forge.health() == message
    assert forge.budget().paused_until == reset

    world.update(rate_limited_until=None)
    clock.now = reset + timedelta(seconds=1)
    assert forge.health() is None
    assert forge.budget().paused_until is None
    assert (await forge.find_prs(world.repo, ["fleet/a"]))["fleet/a"].number == 1
    assert len(world.calls()) == calls + 2  # an hour later: auth status again, the query
    assert forge.budget().remaining == 4999


@pytest.mark.parametrize(
    ("style", "after"),
    [("graphql", None), ("secondary", timedelta(seconds=90))],
)
async def test_other_rate_limit_answers(world: World, style: str, after: timedelta | None) -> None:
    reset = (datetime.now(UTC) + timedelta(minutes=30)).replace(microsecond=0)
    world.update(rate_limited_until=reset.isoformat(), rate_limit_style=style)
    clock = Clock()
    forge = GitHubForge(env=world.env, clock=clock)
    with pytest.raises(ForgePausedError) as caught:
        await forge.ci_status(world.repo, [1])
    assert caught.value.until == (reset if after is None else clock.now + after)


async def test_rate_limit_without_reset_time_pauses_a_minute(world: World) -> None:
    reset = datetime.now(UTC) + timedelta(hours=1)
    world.update(prs=[pr(1, "fleet/a")], rate_limited_until=reset.isoformat())
    clock = Clock()
    forge = GitHubForge(env=world.env, clock=clock)
    with pytest.raises(ForgePausedError) as caught:
        await forge.diff(world.repo, 1)  # gh pr ... says only "API rate limit exceeded"
    assert caught.value.until == clock.now + timedelta(seconds=60)


async def test_budget_follows_the_answers(world: World) -> None:
    world.update(
        prs=[pr(1, "fleet/a")],
        rate_limit={"remaining": 120, "limit": 5000, "reset_at": "2030-01-01T00:00:00Z"},
    )
    forge = GitHubForge(env=world.env)
    assert forge.budget().remaining is None
    await forge.find_prs(world.repo, ["fleet/a"])
    budget = forge.budget()
    assert (budget.remaining, budget.limit) == (119, 5000)
    assert budget.reset_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert budget.paused_until is None


async def test_gh_missing(world: World, tmp_path: Path) -> None:
    bare = tmp_path / "bin"
    bare.mkdir()
    git = shutil.which("git")
    assert git is not None
    (bare / "git").symlink_to(git)
    forge = GitHubForge(env={**world.env, "PATH": str(bare)})
    assert forge.health() == MISSING
    assert MISSING == "gh is not installed: PR and CI checks are off (liveness checks go on)"
    for attempt in [
        forge.find_prs(world.repo, ["fleet/a"]),
        forge.ci_status(world.repo, [1]),
        forge.diff(world.repo, 1),
        forge.comment(world.repo, 1, "x"),
        forge.merge(world.repo, 1),
    ]:
        with pytest.raises(ForgeUnavailableError, match="not installed"):
            await attempt
    assert forge.calls == 0
    assert world.calls() == []


async def test_gh_not_logged_in_is_checked_once(world: World) -> None:
    world.update(logged_in=False)
    forge = GitHubForge(env=world.env)
    assert forge.health() is None  # not known before the first use
    for _ in range(3):
        with pytest.raises(ForgeUnavailableError, match="not logged in"):
            await forge.find_prs(world.repo, ["fleet/a"])
    assert forge.health() == NOT_LOGGED_IN
    assert world.calls() == [["auth", "status"]]


async def test_auth_is_rechecked_after_a_few_minutes(world: World) -> None:
    world.update(logged_in=False)
    clock = Clock()
    forge = GitHubForge(env=world.env, clock=clock)
    with pytest.raises(ForgeUnavailableError):
        await forge.ci_status(world.repo, [])
    world.update(logged_in=True)
    clock.now += timedelta(minutes=10)
    assert await forge.ci_status(world.repo, []) == {}
    assert forge.health() is None
    assert world.calls() == [["auth", "status"], ["auth", "status"]]


async def test_comment_body_goes_through_stdin(world: World) -> None:
    world.update(prs=[pr(3, "fleet/a")])
    body = 'CI failed:\n  --body "oops" $(rm -rf /)\n'
    await GitHubForge(env=world.env).comment(world.repo, 3, body)
    assert world.read()["comments"] == [{"pr": 3, "body": body}]
    argv = world.calls()[-1]
    assert argv == ["pr", "comment", "3", "-R", "acme/widgets", "--body-file", "-"]
    assert all("oops" not in a for a in argv)


async def test_diff(world: World) -> None:
    world.update(prs=[pr(3, "fleet/a", diff="diff --git a/x b/x\n+hello\n")])
    assert await GitHubForge(env=world.env).diff(world.repo, 3) == "diff --git a/x b/x\n+hello\n"
    assert world.calls()[-1] == ["pr", "diff", "3", "-R", "acme/widgets"]


async def test_merge_success_and_conflict(world: World) -> None:
    world.update(prs=[pr(3, "fleet/a"), pr(4, "fleet/b", conflicting=True)])
    forge = GitHubForge(env=world.env, merge_method="squash")

    merged = await forge.merge(world.repo, 3)
    assert merged.merged and merged.reason is None
    assert merged.sha == world.read()["prs"][0]["merge_commit"]
    assert world.read()["prs"][0]["state"] == "MERGED"
    assert ["pr", "merge", "3", "-R", "acme/widgets", "--squash"] in world.calls()

    refused = await forge.merge(world.repo, 4, method="rebase")
    assert not refused.merged and refused.sha is None
    assert refused.reason is not None and "not mergeable" in refused.reason
    assert world.read()["prs"][1]["state"] == "OPEN"
    assert world.calls()[-1][-1] == "--rebase"


async def test_a_merged_pr_merges_again_and_reports_merged(world: World) -> None:
    """A merge whose caller failed after GitHub merged: the next merge answers merged (gh
    refuses a merged PR), and CI reports carry the PR's state for the monitor."""
    world.update(prs=[pr(3, "fleet/a", checks=[OK]), pr(4, "fleet/b", checks=[OK])])
    forge = GitHubForge(env=world.env)
    first = await forge.merge(world.repo, 3)
    again = await forge.merge(world.repo, 3)
    assert again.merged and again.sha == first.sha and again.reason == "already merged"
    reports = await forge.ci_status(world.repo, [3, 4])
    assert (reports[3].pr_state, reports[4].pr_state) == (PrState.MERGED, PrState.OPEN)


@pytest.mark.parametrize(
    ("url", "slug"),
    [
        ("https://github.com/acme/widgets.git", ("acme", "widgets")),
        ("https://github.com/acme/widgets", ("acme", "widgets")),
        ("git@github.com:acme/wid.gets.git\n", ("acme", "wid.gets")),
        ("ssh://git@github.com/acme/widgets", ("acme", "widgets")),
        ("https://gitlab.com/acme/widgets.git", None),
        ("/srv/git/widgets.git", None),
    ],
)
def test_parse_remote(url: str, slug: tuple[str, str] | None) -> None:
    assert parse_remote(url) == slug


async def test_repo_without_github_origin(world: World, tmp_path: Path) -> None:
    other = tmp_path / "other"
    subprocess.run(["git", "init", "-q", str(other)], check=True)
    forge = GitHubForge(env=world.env)
    with pytest.raises(ForgeUnavailableError, match="no origin"):
        await forge.find_prs(other, ["fleet/a"])


REVIEW_DIFF = (
    "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,3 @@\n x\n+y\n z\n"
)
REVIEW_CALL = ["api", "--method", "POST", "repos/acme/widgets/pulls/3/reviews", "--input", "-"]


async def test_a_verdict_is_a_pr_review_with_line_comments(world: World) -> None:
    """Another author's PR: an APPROVE review with its line comment on the diff's line."""
    world.update(prs=[pr(3, "fleet/a", diff=REVIEW_DIFF, author="octocat", head_sha="c" * 40)])
    comment = {"path": "calc.py", "line": 2, "body": "why y?"}
    await GitHubForge(env=world.env).review(world.repo, 3, verdict="approve", body="ok",
                                            comments=[comment], head_sha="c" * 40)  # fmt: skip
    assert world.read()["reviews"] == [{
        "pr": 3, "event": "APPROVE", "body": "ok", "commit_id": "c" * 40,
        "comments": [{**comment, "side": "RIGHT"}],
    }]  # fmt: skip
    assert world.calls()[-1] == REVIEW_CALL  # the body on stdin, never in argv


async def test_a_review_github_refuses_falls_back_to_a_comment_review(world: World) -> None:
    """fleet's own PR cannot be approved or sent back by fleet's account: the verdict goes
    as a COMMENT review; a line outside the diff: its comments folded into the body."""
    world.update(prs=[pr(3, "fleet/a", diff=REVIEW_DIFF)])  # opened by the viewer
    forge = GitHubForge(env=world.env)
    inside = {"path": "calc.py", "line": 2, "body": "why y?"}
    await forge.review(world.repo, 3, verdict="request_changes", body="no", comments=[inside])
    outside = {"path": "calc.py", "line": 40, "body": "far away"}
    await forge.review(world.repo, 3, verdict="comment", body="hm", comments=[outside])
    reviews = world.read()["reviews"]
    assert [(r["event"], r["body"], r["comments"]) for r in reviews] == [
        ("COMMENT", "no", [{**inside, "side": "RIGHT"}]),
        ("COMMENT", "hm\n- `calc.py:40` far away", []),
    ]
    assert [c for c in world.calls() if c[0] == "api"] == [REVIEW_CALL] * 4
    with pytest.raises(ForgeError, match="Not Found"):
        await forge.review(world.repo, 9, verdict="approve", body="ok")
