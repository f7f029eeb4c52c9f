"""A review on GitHub: the fake `gh` (tests/fake_gh, GitHub's GraphQL schema) reports a PR
whose checks passed; the reviewers read `gh pr diff` and post each verdict as a PR
review (`gh api .../pulls/N/reviews`); the DoD asks the forge whether the PR still merges."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from pathlib import Path

import asyncpg
import pytest

from conftest import git
from fleet_core.conductor import Actor, Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.forge.github import GitHubForge
from fleet_core.forge.select import ForgeSet
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import CiStatus, Tier
from fleet_core.monitor import Monitor, MonitorConfig
from fleet_core.review.store import ReviewStore
from fleet_core.why import cause

HERE = Path(__file__).parent
FAST = MonitorConfig(interval_s=0.1, deadline_s=30.0, minute_s=0.3)
DIFF = "diff --git a/calc.py b/calc.py\n--- a/calc.py\n+++ b/calc.py\n@@ -1,2 +1,3 @@\n x\n+y\n"


@pytest.mark.parametrize("behind", [1, 3])
async def test_a_github_pr_is_reviewed_and_commented(
    tmp_path: Path, db: Database, su: asyncpg.Connection, behind: int
) -> None:
    """With `dod.default.max_behind = 2`: 1 commit behind main is synced, 3 is not (the
    forge's REST compare says, `gh api .../compare/main...HEAD`)."""
    repo = tmp_path / "gh-repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    git(repo, "remote", "add", "origin", "https://github.com/acme/widgets.git")
    world = tmp_path / "world.json"
    checks = [{"name": "test", "status": "COMPLETED", "conclusion": "SUCCESS"}]
    pr = {"number": 7, "branch": "fleet/x", "base": "main", "state": "OPEN",
          "head_sha": "ab" * 20, "conflicting": False, "review": None, "checks": checks,
          "diff": DIFF, "behind": behind, "author": "octocat"}  # fmt: skip
    world.write_text(json.dumps({"repo": "acme/widgets", "logged_in": True, "prs": [pr],
                                 "comments": []}))  # fmt: skip
    env = {**os.environ, "PATH": f"{HERE / 'fake_gh'}:{os.environ['PATH']}",
           "FAKE_GH_STATE": str(world), "FAKE_GH_LOG": str(tmp_path / "gh.log")}  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data", host_id="gh-host",
                        repos={str(repo): {"forge": "github"}},
                        dod={"default": {"max_behind": 2}})  # fmt: skip
    c = Conductor.from_settings(settings, db)
    c.forges = ForgeSet(tmp_path / "forge", repos=c.repos, github=GitHubForge(env=env))
    tid = await su.fetchval(
        "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description,"
        " branch, repository, status, host_id, pr_number, spawned_at)"
        " VALUES ('alice','demo','demo','docs','Document y',"
        " 'fleet/x', $1, 'pr_created', 'gh-host', 7, now()) RETURNING id",
        str(repo),
    )  # fmt: skip
    m = Monitor(c, FAST)
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 60
        rec = await c.registry(Actor("alice", Tier.SOVEREIGN)).get(tid)
        ended = (TaskStatus.READY, TaskStatus.REJECTED)
        while loop.time() < end and rec.status not in ended:
            report = await m.cycle()
            assert report is not None and report.errors == [], report
            await asyncio.sleep(0.05)
            rec = await c.registry(Actor("alice", Tier.SOVEREIGN)).get(tid)
        status = rec.review_status or {}
        assert status["head_sha"] == "ab" * 20 and status["verdict"] == "approved"
        items = {i["name"]: (i["ok"], i["detail"]) for i in status["dod"]["items"]}
        if behind > 2:
            assert rec.status is TaskStatus.REJECTED, rec.review_status
            assert (rec.failure_context or {})["dod_unmet"] == [
                "✗ synced: behind main by 3 commits (at most 2)"
            ]
            return
        assert rec.status is TaskStatus.READY, rec.review_status
        assert items["synced"] == (True, "merges cleanly into main, 1 behind")
        assert (
            '"api", "repos/acme/widgets/compare/main...' + "ab" * 20
            in (tmp_path / "gh.log").read_text()
        )
        assert items["ci"] == (True, "passing")
        rows = await ReviewStore(db).for_task(Tenant.operator("alice"), tid)
        assert len(rows) == 3 and {r.head_sha for r in rows} == {"ab" * 20}
        posted = json.loads(world.read_text())["reviews"]  # PR reviews (gh api), not comments
        assert sorted((r["event"], r["body"].splitlines()[0]) for r in posted) == [
            ("APPROVE", f"**fleet review ({focus}, demo demo): approve**")
            for focus in ("architecture", "logic", "security")
        ]
        assert {r["pr"] for r in posted} == {7} and {r["commit_id"] for r in posted} == {"ab" * 20}
        calls = (tmp_path / "gh.log").read_text()
        assert '"pr", "diff"' in calls and '"pr", "comment"' not in calls
    finally:
        await c.stop_engine()


async def test_a_github_pr_whose_checks_never_start_is_ci_no_checks(
    tmp_path: Path, db: Database, su: asyncpg.Connection
) -> None:
    """After ci_start_minutes, a PR with no check at all is `ci: no checks`: the task fails,
    not retried, where its DoD asks for CI; it is reviewed where its DoD says `ci = false`. A
    PR whose check is running stays pending."""
    repo = tmp_path / "gh-repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    git(repo, "remote", "add", "origin", "https://github.com/acme/widgets.git")
    world = tmp_path / "world.json"
    running = [{"name": "test", "status": "IN_PROGRESS", "conclusion": None}]
    prs = [{"number": n, "branch": f"fleet/{n}", "base": "main", "state": "OPEN",
            "checks": checks, "diff": DIFF}
           for n, checks in ((1, []), (2, running), (3, []))]  # fmt: skip
    world.write_text(json.dumps({"repo": "acme/widgets", "logged_in": True, "prs": prs,
                                 "comments": []}))  # fmt: skip
    env = {**os.environ, "PATH": f"{HERE / 'fake_gh'}:{os.environ['PATH']}",
           "FAKE_GH_STATE": str(world), "FAKE_GH_LOG": str(tmp_path / "gh.log")}  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data", host_id="gh-host", retry_base_seconds=0.01,
                        repos={str(repo): {"forge": "github"}},
                        dod={"docs": {"ci": False}})  # fmt: skip
    c = Conductor.from_settings(settings, db)
    c.forges = ForgeSet(tmp_path / "forge", repos=c.repos, github=GitHubForge(env=env))
    ids = [
        await su.fetchval(
            "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description,"
            " branch, repository, status, host_id, pr_number, spawned_at)"
            " VALUES ('alice','demo','demo',$3,'Document y',"
            " $1, $2, 'pr_created', 'gh-host', $4, now()) RETURNING id",
            f"fleet/{n}", str(repo), kind, n,
        )
        for n, kind in ((1, "feature"), (2, "feature"), (3, "docs"))
    ]  # fmt: skip
    m = Monitor(c, MonitorConfig(interval_s=0.1, deadline_s=30.0, minute_s=0.1, ci_start_s=0.3))
    registry = c.registry(Actor("alice", Tier.SOVEREIGN))
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + 60
        recs = [await registry.get(t) for t in ids]
        while loop.time() < end and not (
            recs[0].status is TaskStatus.FAILED and recs[2].status is TaskStatus.READY
        ):
            report = await m.cycle()
            assert report is not None and report.errors == [], report
            await asyncio.sleep(0.05)
            recs = [await registry.get(t) for t in ids]
        none, pending, docs = recs
        assert none.status is TaskStatus.FAILED, none.failure_context
        ctx = none.failure_context or {}
        assert ctx["reason"] == "ci_no_checks" and ctx["ci_start_minutes"] == 3
        assert (
            cause(ctx) == "ci: no checks (none started on the PR within 3 min: CI not configured)"
        )
        assert pending.status is TaskStatus.PR_CREATED and pending.ci_status is CiStatus.PENDING
        assert docs.status is TaskStatus.READY, docs.review_status
        items = {i["name"]: i for i in (docs.review_status or {})["dod"]["items"]}
        assert items["ci"]["ok"] and items["ci"]["detail"].endswith("(not required)")
        for _ in range(3):  # the retry engine leaves it to the operator
            assert await c.retries.run_due([await registry.get(ids[0])]) == 0
    finally:
        await c.stop_engine()
