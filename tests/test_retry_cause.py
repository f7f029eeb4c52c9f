"""Retries keep the cause: a fresh branch when the previous attempt never made one, every
attempt's cause in failure_context.attempts, the operator's note in the retry prompt, and a
one-line "why" first in `fleet show` and the API's detail, big texts in their own sections."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

import test_conductor
from conftest import api_server, api_settings, fleet, grant_repo, new_task
from fleet_core.auth.tokens import issue_token
from fleet_core.conductor import Actor
from fleet_core.db.database import Database, Tenant
from fleet_core.enrichment import build_prompt, task_sections
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskType, Tier
from fleet_core.registry import TaskRegistry
from fleet_core.saga import SagaError
from fleet_core.why import why

ALICE = Actor("alice", Tier.ARCHITECT)


def failing_setup(repo: Path) -> dict[str, Any]:
    """The repository's setup command fails: the agent never starts (an agent that is not
    installed is refused before any task exists)."""
    return {str(repo): {"setup": ["sh", "-c", "echo no deps here; exit 3"]}}


make = test_conductor.make  # the fixture, shared


@pytest.fixture
async def repo(repo: Path, db: Database) -> Path:
    await grant_repo(db, repo, "alice")
    return repo


async def test_a_retry_after_a_failed_start_keeps_every_cause(
    make: Any, repo: Path, su: asyncpg.Connection
) -> None:
    c = make(repos=failing_setup(repo))
    req = test_conductor.request(repo, "write the docs")
    with pytest.raises(SagaError) as err:
        await c.spawn(ALICE, req)
    first = await c.registry(ALICE).get(err.value.task_id)
    assert first.failure_context is not None
    assert [a["attempt"] for a in first.failure_context["attempts"]] == [1]
    with pytest.raises(SagaError):
        await c.retry(ALICE, str(first.id), note="  use the v2 API  ")
    row = await su.fetchrow("SELECT * FROM fleet_tasks WHERE id = $1", first.id)
    ctx = json.loads(row["failure_context"])
    # The first attempt never created its branch: the retry got a fresh name.
    assert row["branch"] == f"{first.branch}-r2" and row["retry_count"] == 1
    # Still the object the retry engine reads, with every attempt's cause.
    assert ctx["reason"] == "spawn_failed" and ctx["runtime_step"] == "setup"
    assert "invalid reference" not in json.dumps(ctx)
    assert [(a["attempt"], a["reason"]) for a in ctx["attempts"]] == [
        (1, "spawn_failed"), (2, "spawn_failed")
    ]  # fmt: skip
    assert ctx["attempts"][0]["cause"].startswith("could not start: setup: "), ctx["attempts"]
    assert ctx["attempts"][1]["operator_note"] == "use the v2 API"  # given to attempt 2
    assert "operator_note" not in ctx["attempts"][0]
    with pytest.raises(Exception, match="note"):
        await c.retry(ALICE, str(first.id), note="   ")


def test_the_note_reaches_the_retry_prompt() -> None:
    failure = {"reason": "ci_failed", "attempt": 1, "operator_note": "the CI needs Python 3.12"}
    sections = task_sections(
        description="fix it", task_type=TaskType.BUG_FIX, repository="/srv/r",
        base_branch="main", branch="fleet/x", repo_summary=None, context_overrides={},
        failure=failure,
    )  # fmt: skip
    prompt = build_prompt(sections, 8000).prompt
    assert "The operator's note for this attempt: the CI needs Python 3.12" in prompt


async def _abandoned_after_a_timeout(db: Database) -> Any:
    reg = TaskRegistry(db, Tenant.operator("alice"))
    rec = await reg.create(new_task(timeout_minutes=5))
    ctx = {"reason": "timeout", "timeout_minutes": 5, "prompt_budget": 8000,
           "diff": "diff --git a/x b/x\n+new line\n", "log_tail": "working...\nstill working",
           "attempts": [{"attempt": 1, "reason": "timeout", "cause": "timed out after 5 min",
                         "at": "2026-01-01T00:00:00"},
                        {"attempt": 2, "reason": "timeout", "cause": "timed out after 5 min",
                         "at": "2026-01-01T00:10:00"}]}  # fmt: skip
    for step in (TaskStatus.SPAWNING, TaskStatus.RUNNING, TaskStatus.FAILED):
        rec = await reg.transition(rec.id, step, expected_version=rec.version)
    counted = await reg.record_failure(rec.id, ctx, expected_version=rec.version)
    assert counted is not None
    return await reg.transition(counted.id, TaskStatus.ABANDONED, expected_version=counted.version)


async def test_show_says_why_first_and_keeps_big_texts_apart(
    db: Database, su: asyncpg.Connection
) -> None:
    rec = await _abandoned_after_a_timeout(db)
    assert why(rec) == "timed out after 5 min; retried once; abandoned"
    out = fleet("show", rec.short_id)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "timed out after 5 min; retried once; abandoned"
    assert "{" not in out.stdout  # no JSON blob
    failure = lines.index("failure:")
    assert lines[failure + 1].split() == ["reason", "timeout"]
    assert "  attempt 2: timed out after 5 min (2026-01-01T00:10:00)" in lines
    diff, tail = lines.index("--- diff ---"), lines.index("--- log tail ---")
    assert lines[diff + 1] == "diff --git a/x b/x" and lines[tail + 2] == "still working"
    doc = json.loads(fleet("show", rec.short_id, "--json").stdout)
    assert next(iter(doc)) == "why" and doc["why"] == lines[0]


def test_why_names_what_a_rejection_and_a_manual_only_failure_wait_for() -> None:
    from fleet_core.models import TaskRecord

    def rec(status: TaskStatus, ctx: dict[str, Any], retries: int = 0) -> TaskRecord:
        return TaskRecord.model_construct(status=status, failure_context=ctx, max_retries=3,
                                          retry_count=retries, timeout_minutes=120,
                                          pr_number=None, ci_status=None)  # fmt: skip

    unmet = {"reason": "dod_unmet", "dod_unmet": ["✗ synced: behind main by 80 commits"]}
    assert why(rec(TaskStatus.REJECTED, unmet)) == (
        "Definition of Done not met (synced: behind main by 80 commits); rejected; "
        "will retry (3 left)"
    )
    asked = {"reason": "review_rejected"}
    assert why(rec(TaskStatus.REJECTED, asked, 3)) == (
        "review rejected; retried 3 times; rejected; no retries left"
    )
    auth = {"reason": "agent_auth"}  # never retried by itself, whatever its budget says
    assert why(rec(TaskStatus.FAILED, auth)) == (
        "agent auth; not retried by itself: `fleet retry` once it is fixed"
    )


async def test_the_api_detail_says_why_and_the_forge_error(
    pg: Any, db: Database, su: asyncpg.Connection, tmp_path: Path
) -> None:
    rec = await _abandoned_after_a_timeout(db)
    settings = api_settings(pg, tmp_path, "api-host")
    async with api_server(settings) as (url, engine, keys):
        token = await issue_token(keys, "alice", Tier.BUILDER)
        h = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            r = await client.get(f"/api/fleet/tasks/{rec.id}", headers=h)
            assert r.status_code == 200, r.text
            doc = r.json()
            assert next(iter(doc)) == "why" and doc["why"].endswith("retried once; abandoned")
            assert doc["forge_error"] is None
            problems = engine.conductor.forges.problems
            for _ in range(problems.threshold):
                problems.failed(rec.repository, "the remote /srv/x.git has no HEAD branch")
            r = await client.get(f"/api/fleet/tasks/{rec.id}", headers=h)
            assert r.json()["forge_error"] == (
                "the remote /srv/x.git has no HEAD branch (no answer for 3 cycles)"
            )
            problems.answered(rec.repository)
            r = await client.get(f"/api/fleet/tasks/{rec.id}", headers=h)
            assert r.json()["forge_error"] is None


async def test_the_api_retry_takes_the_operators_note(
    pg: Any, db: Database, su: asyncpg.Connection, repo: Path, tmp_path: Path
) -> None:
    """POST .../retry with `{"note": ...}`: a bad note is a 400 naming `note` and changes
    nothing; a good one reaches the next attempt's cause (and so its prompt)."""
    reg = TaskRegistry(db, Tenant.operator("alice"))
    rec = await reg.create(new_task(repository=str(repo)))
    for step in (TaskStatus.SPAWNING, TaskStatus.RUNNING, TaskStatus.FAILED):
        rec = await reg.transition(rec.id, step, expected_version=rec.version)
    ctx = {"reason": "ci_failed", "attempt": 1}
    counted = await reg.record_failure(rec.id, ctx, expected_version=rec.version)
    assert counted is not None
    settings = api_settings(pg, tmp_path, "api-host").model_copy(
        update={"repos": failing_setup(repo)}
    )
    async with api_server(settings) as (url, _engine, keys):
        token = await issue_token(keys, "alice", Tier.BUILDER)
        h = {"Authorization": f"Bearer {token}"}
        path = f"/api/fleet/tasks/{rec.id}/retry"
        async with httpx.AsyncClient(base_url=url, timeout=60) as client:
            for body in ({"note": "   "}, {"note": "x" * 2001}, {"nope": 1}, {"note": 3}):
                r = await client.post(path, json=body, headers=h)
                assert r.status_code == 400, (body, r.text)
                assert ("nope" if "nope" in body else "note") in r.text, r.text
            row = await su.fetchrow("SELECT * FROM fleet_tasks WHERE id = $1", rec.id)
            assert row["status"] == "failed" and row["version"] == counted.version
            r = await client.post(path, json={"note": "pin the v2 API"}, headers=h)
    # The repository's setup fails, so the retry ends failed again, but with the note kept.
    row = await su.fetchrow("SELECT * FROM fleet_tasks WHERE id = $1", rec.id)
    assert r.status_code == 502 and r.json()["step"] == "runtime", r.text
    assert row["retry_count"] == counted.retry_count + 1 and row["status"] == "failed"
    attempts = json.loads(row["failure_context"])["attempts"]
    assert attempts[-1]["operator_note"] == "pin the v2 API", attempts
