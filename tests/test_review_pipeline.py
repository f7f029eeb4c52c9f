"""The review pipeline in the running lifecycle: real PostgreSQL, git, tmux, the demo agent,
the local forge with the demo's unittest CI, and the demo reviewers."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import git
from fleet_core.audit import audit_trail
from fleet_core.conductor import Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import MergeRefusedError
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.monitor import Monitor
from fleet_core.review.reviewers import DEMO_COMMENT
from fleet_core.review.store import ReviewStore
from fleet_core.review.view import verdict_lines
from fleet_core.why import why
from lifecycle_support import ACTOR, QUICK_RETRIES, base_fields, conductors, spawn

S = TaskStatus


@pytest.fixture
async def engine(tmp_path: Path, db: Database) -> AsyncIterator[Callable[..., Any]]:
    async with conductors(db) as make:
        yield lambda **kw: make(Settings(**{**base_fields(tmp_path), **QUICK_RETRIES, **kw}))


async def until(
    c: Conductor, m: Monitor, tid: Any, done: Callable[[TaskRecord], bool], limit: float = 90
) -> TaskRecord:
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    seen = []
    while loop.time() < end:
        report = await m.cycle()
        assert report is not None and report.errors == [], report
        rec = await c.registry(ACTOR).get(tid)
        seen.append(rec.status)
        if done(rec):
            return rec
        await c.forges.local.wait_idle()
        await asyncio.sleep(0.05)
    raise AssertionError(f"task stayed {rec.status.value}: {rec.review_status}")


def status_is(*statuses: TaskStatus) -> Callable[[TaskRecord], bool]:
    return lambda rec: rec.status in statuses


async def reviews(c: Conductor, rec: TaskRecord) -> list[Any]:
    return await ReviewStore(c.db).for_task(Tenant.operator("alice"), rec.id)


async def test_three_approvals_make_the_task_ready(engine, sample: Path) -> None:
    c, m = engine()
    rec = await spawn(c, sample, "Add a multiply function")
    ready = await until(c, m, rec.id, status_is(S.READY, S.REJECTED, S.FAILED))
    assert ready.status is S.READY
    status = ready.review_status or {}
    assert (status["state"], status["verdict"], status["approvals"]) == ("done", "approved", 3)
    assert (status["expected"], status["done"]) == (3, 3)
    rows = await reviews(c, ready)
    assert sorted(r.reviewer for r in rows) == ["architecture", "logic", "security"]
    assert {(r.verdict, r.kind, r.attempt) for r in rows} == {("approve", "demo", 1)}
    assert all(r.head_sha and len(r.head_sha) == 40 for r in rows)
    # The verdicts are posted on the PR: the local forge keeps them with it.
    state = c.forges.local.state_of(sample.parent / "sample.git")
    posted = "".join(p.read_text() for p in state.rglob("*.json"))
    assert "fleet review (security, demo demo): approve" in posted


async def test_a_request_for_changes_is_retried_with_the_comment_in_the_prompt(
    engine, sample: Path
) -> None:
    c, m = engine()
    rec = await spawn(c, sample, "Add a square function [demo:review-reject-once]", max_retries=2)
    moves: list[tuple[str, str]] = []
    c.bus.subscribe("*", lambda e: moves.append((e.data.get("from"), e.data.get("to"))))
    ready = await until(c, m, rec.id, status_is(S.READY, S.ABANDONED))
    assert ready.status is S.READY and ready.retry_count == 1
    assert ("reviewing", "rejected") in moves and ("rejected", "retrying") in moves
    assert (ready.failure_context or {})["reason"] == "review_rejected"
    assert DEMO_COMMENT in ready.failure_context["review_comments"]
    # The second attempt's prompt (the demo agent writes it into the branch) has the comment.
    prompt = (Path(ready.worktree_path or "") / "fleet-demo" / f"{rec.id}.md").read_text()
    assert "Review comments" in prompt and DEMO_COMMENT in prompt
    rows = await reviews(c, ready)
    first = [r for r in rows if r.attempt == 1]
    second = [r for r in rows if r.attempt == 2]
    assert sorted(r.verdict for r in first) == ["approve", "approve", "request_changes"]
    [lead] = [r for r in first if r.verdict == "request_changes"]
    assert lead.comments[0]["body"] == DEMO_COMMENT and lead.comments[0]["line"] >= 1
    assert [r.verdict for r in second] == ["approve"] * 3
    assert {r.head_sha for r in first}.isdisjoint({r.head_sha for r in second})


async def test_a_hung_reviewer_times_out_and_the_others_still_count(engine, sample: Path) -> None:
    c, m = engine(review_timeout_minutes=0.02)  # 1.2 s
    rec = await spawn(c, sample, "Add a cube function [demo:review-hang]")
    ready = await until(c, m, rec.id, status_is(S.READY, S.REJECTED))
    assert ready.status is S.READY
    status = ready.review_status or {}
    assert (status["verdict"], status["warning"]) == ("timed_out", "review_timed_out")
    rows = await reviews(c, ready)
    assert sorted((r.verdict, r.error) for r in rows) == [("comment", "timed out")] * 3


async def test_a_strict_review_that_times_out_is_a_failure_that_is_retried(
    engine, sample: Path
) -> None:
    c, m = engine(review_timeout_minutes=0.02, strict_reviews=True)
    rec = await spawn(c, sample, "Add a cube function [demo:review-hang]", max_retries=0)
    ended = await until(c, m, rec.id, status_is(S.ABANDONED, S.READY))
    assert ended.status is S.ABANDONED
    assert (ended.failure_context or {})["reason"] == "review_timeout"


async def test_an_answer_that_is_not_json_is_asked_again_then_counts_as_comment(
    engine, sample: Path
) -> None:
    c, m = engine()
    rec = await spawn(c, sample, "Add a negate function [demo:review-garbage]")
    ready = await until(c, m, rec.id, status_is(S.READY, S.REJECTED))
    assert ready.status is S.READY
    assert (ready.review_status or {})["verdict"] == "no_answer"
    rows = await reviews(c, ready)
    assert {(r.verdict, (r.error or "")[:21]) for r in rows} == {
        ("comment", "invalid answer twice:")
    }


async def test_a_repository_without_ci_fails_the_definition_of_done(engine, sample: Path) -> None:
    (sample / ".fleet.toml").write_text('forge = "local"\n')  # no `ci`
    git_commit(sample, "no CI")
    c, m = engine()
    rec = await spawn(c, sample, "Add a halve function", max_retries=2)
    ended = await until(c, m, rec.id, status_is(S.REJECTED, S.ABANDONED, S.READY))
    assert ended.status is S.REJECTED
    ctx = ended.failure_context or {}
    # Only the repository's setup keeps it from ready: another agent attempt cannot fix that,
    # so none is spent on it (it waits for the operator's fix and `fleet retry`).
    assert ctx["reason"] == "dod_setup"
    assert ctx["dod_unmet"] == [
        "✗ ci: not configured (.fleet.toml has no `ci`; `ci = false` if on purpose)"
    ]
    dod = (ended.review_status or {})["dod"]
    assert [(i["name"], i["ok"], i["setup"]) for i in dod["items"]] == [
        ("pr", True, False), ("synced", True, False), ("ci", False, True),
        ("reviews", True, False),
    ]  # fmt: skip
    for _ in range(5):
        report = await m.cycle()
        assert report is not None and report.errors == []
    still = await c.registry(ACTOR).get(rec.id)
    assert (still.status, still.retry_count) == (S.REJECTED, 0)
    assert why(still) == (
        "reviewed and approved, but the repository has no CI: set `ci` in its .fleet.toml "
        "(or `ci = false` on purpose); rejected; not retried by itself: `fleet retry` once it "
        "is fixed"
    )


async def test_ci_false_on_purpose_holds_and_merge_checks_the_dod_again(
    engine, sample: Path, db: Database
) -> None:
    (sample / ".fleet.toml").write_text('forge = "local"\nci = false\n')
    git_commit(sample, "no CI, on purpose")
    c, m = engine()
    rec = await spawn(c, sample, "Add a double function")
    ready = await until(c, m, rec.id, status_is(S.READY, S.REJECTED, S.ABANDONED))
    assert ready.status is S.READY, ready.failure_context
    items = {i["name"]: i for i in (ready.review_status or {})["dod"]["items"]}
    assert items["ci"] == {"name": "ci", "ok": True, "detail": "none, on purpose (ci = false)",
                           "setup": False}  # fmt: skip
    # The operator's config changes before the merge: CI is now asked for and absent.
    c2, _ = engine(repos={str(sample): {"ci": None}})
    with pytest.raises(MergeRefusedError, match=r"✗ ci: not configured.*--force merges anyway"):
        await c2.merge(ACTOR, str(rec.id))
    assert (await c2.registry(ACTOR).get(rec.id)).status is S.READY
    merged = await c2.merge(ACTOR, str(rec.id), force=True)
    assert merged.status is S.MERGED
    trail = await audit_trail(db, Tenant.operator("alice"), rec.id)
    done = [a for a in trail if a["event_type"] == "fleet.completed"]
    assert done[0]["detail"]["forced"] is True
    assert done[0]["detail"]["unmet"][0].startswith("✗ ci: not configured")


async def test_a_branch_too_far_behind_its_base_is_not_synced(engine, sample: Path) -> None:
    (sample / ".fleet.toml").write_text('forge = "local"\nci = false\n')
    git_commit(sample, "no CI, on purpose")
    c, m = engine()
    rec = await spawn(c, sample, "Add a triple function")
    ready = await until(c, m, rec.id, status_is(S.READY, S.REJECTED, S.ABANDONED))
    assert ready.status is S.READY, ready.failure_context
    items = {i["name"]: i for i in (ready.review_status or {})["dod"]["items"]}
    assert items["synced"]["detail"] == "merges cleanly into main"
    for k in range(2):  # the base moves on by two commits
        (sample / f"note{k}.txt").write_text(f"note {k}\n")
        git(sample, "add", f"note{k}.txt")
        git_commit(sample, f"note {k}")
    strict, _ = engine(dod={"feature": {"max_behind": 1}})
    with pytest.raises(
        MergeRefusedError, match=r"✗ synced: behind main by 2 commits \(at most 1\)"
    ):
        await strict.merge(ACTOR, str(rec.id))
    assert (await strict.registry(ACTOR).get(rec.id)).status is S.READY
    lenient, _ = engine()  # the default: at most 50 behind
    assert (await lenient.merge(ACTOR, str(rec.id))).status is S.MERGED


async def test_a_review_task_makes_no_pr_its_report_is_its_dod(engine, sample: Path) -> None:
    c, m = engine()
    rec = await spawn(c, sample, "Review the calc module", task_type="review")
    ready = await until(c, m, rec.id, status_is(S.READY, S.FAILED, S.ABANDONED))
    assert ready.status is S.READY, ready.failure_context
    assert ready.pr_number is None and await reviews(c, ready) == []  # no PR, no reviewers
    status = ready.review_status or {}
    assert status["report"] == {"verdict": "approve", "summary": "demo review: nothing to change",
                                "comments": []}  # fmt: skip
    assert verdict_lines([], status) == [
        "definition of done: held", "  ✓ report: approve, 0 line comment(s)",
        "report: ✓ approve", "  demo review: nothing to change",
    ]  # fmt: skip
    # "Merging" a review task accepts its report: merged, nothing asked of a forge.
    accepted = await c.merge(ACTOR, str(ready.id))
    assert accepted.status is S.MERGED and accepted.pr_number is None
    silent = await spawn(c, sample, "Review again [demo:no-report]", task_type="review",
                         max_retries=0)  # fmt: skip
    ended = await until(c, m, silent.id, status_is(S.READY, S.ABANDONED))
    assert ended.status is S.ABANDONED and ended.pr_number is None
    assert (ended.failure_context or {})["reason"] == "no_report"


def git_commit(repo: Path, message: str) -> None:
    git(repo, "commit", "-qam", message)
    git(repo, "push", "-q", "origin", "main")
