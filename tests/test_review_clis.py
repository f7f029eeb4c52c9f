"""Agent CLIs as reviewers, in their JSON modes: fake claude, codex and gemini executables on
PATH (tests/fake_clis) answering in each CLI's real output shape, run like agents (in the
sandbox when there is one) on a read-only checkout of the PR head."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import grant_repo
from fleet_core.conductor import Actor, Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.demo import make_sample
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import SpawnRequest, TaskRecord, Tier
from fleet_core.monitor import Monitor, MonitorConfig
from fleet_core.review.store import ReviewStore

ACTOR = Actor("alice", Tier.SOVEREIGN)
FAKES = Path(__file__).parent / "fake_clis"
FAST = MonitorConfig(interval_s=0.1, deadline_s=30.0, minute_s=0.3)
S = TaskStatus


@pytest.fixture
async def sample(tmp_path: Path, db: Database) -> Path:
    work = make_sample(tmp_path / "demo")
    await grant_repo(db, work, "alice")
    return work


@pytest.fixture
async def engine(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Any]]:
    monkeypatch.setenv("PATH", f"{FAKES}:/usr/local/bin:/usr/bin:/bin")
    made: list[Conductor] = []

    def build(kind: str, model: str, **kw: Any) -> tuple[Conductor, Monitor]:
        fields: dict[str, Any] = {
            "data_dir": tmp_path / "data", "host_id": "test-host", "kill_grace_seconds": 0.5,
            "retry_base_seconds": 0.05, "retry_max_seconds": 0.2,
            "secrets": {"FLEET_DEMO_DELAY": "0"},
            "reviews": {"kind": kind, "model": model},
            **kw,
        }  # fmt: skip
        c = Conductor.from_settings(Settings(**fields), db)
        made.append(c)
        return c, Monitor(c, FAST)

    try:
        yield build
    finally:
        for c in made:
            await c.stop_engine()
        if made:
            await made[0].runtime.tmux.kill_server()


async def spawn(c: Conductor, repo: Path, description: str, **kw: Any) -> TaskRecord:
    request = SpawnRequest.model_validate({
        "description": description, "repository": str(repo), "task_type": "feature",
        "agent_type": "demo", "timeout_minutes": 5, **kw,
    })  # fmt: skip
    out = await c.spawn(ACTOR, request)
    assert out.task is not None
    return out.task


async def until(c: Conductor, m: Monitor, tid: Any, *statuses: TaskStatus) -> TaskRecord:
    loop = asyncio.get_running_loop()
    end = loop.time() + 90
    while loop.time() < end:
        report = await m.cycle()
        assert report is not None and report.errors == [], report
        rec = await c.registry(ACTOR).get(tid)
        if rec.status in statuses:
            return rec
        await c.forges.local.wait_idle()
        await asyncio.sleep(0.05)
    raise AssertionError(f"task stayed {rec.status.value}: {rec.review_status}")


async def rows(c: Conductor, rec: TaskRecord) -> dict[str, Any]:
    return {
        r.reviewer: r for r in await ReviewStore(c.db).for_task(Tenant.operator("alice"), rec.id)
    }


@pytest.mark.parametrize(("kind", "cli"), [("claude_code", "claude"), ("codex", "codex"),
                                           ("gemini_cli", "gemini")])  # fmt: skip
async def test_cli_reviewers_approve_on_a_read_only_checkout(engine, sample, kind, cli) -> None:
    c, m = engine(kind, "approve")
    rec = await spawn(c, sample, "Add a multiply function")
    ready = await until(c, m, rec.id, S.READY, S.REJECTED)
    assert ready.status is S.READY, ready.review_status
    got = await rows(c, ready)
    assert sorted(got) == ["architecture", "logic", "security"]
    for focus, row in got.items():
        assert (row.kind, row.model, row.verdict) == (kind, "approve", "approve"), row
        assert row.summary == f"{focus} by {cli}; cwd writable: False"
    if kind == "claude_code":  # claude reports what it cost
        assert {r.cost_usd for r in got.values()} == {0.0125}


async def test_a_cli_reviewer_requesting_changes_sends_the_task_back(engine, sample) -> None:
    c, m = engine("claude_code", "reject-logic-once")
    rec = await spawn(c, sample, "Add a square function", max_retries=1)
    ready = await until(c, m, rec.id, S.READY, S.ABANDONED)
    assert ready.status is S.READY and ready.retry_count == 1
    prompt = (Path(ready.worktree_path or "") / "fleet-demo" / f"{rec.id}.md").read_text()
    assert "calc.py:4: claude logic: handle b == 0" in prompt


@pytest.mark.parametrize("model", ["garbage", "fail"])
async def test_a_cli_reviewer_without_a_valid_answer_counts_as_comment(
    engine, sample, model
) -> None:
    c, m = engine("codex", model) if model == "garbage" else engine("gemini_cli", model)
    rec = await spawn(c, sample, "Add a negate function")
    ready = await until(c, m, rec.id, S.READY, S.REJECTED)
    assert ready.status is S.READY
    assert (ready.review_status or {})["verdict"] == "no_answer"
    errors = [r.error or "" for r in (await rows(c, ready)).values()]
    expected = "invalid answer twice" if model == "garbage" else "CommandError"
    assert all(expected in e for e in errors), errors
