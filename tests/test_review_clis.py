"""Agent CLIs as reviewers, in their JSON modes: fake claude, codex and gemini executables on
PATH (tests/fake_clis) answering in each CLI's real output shape, run like agents (in the
sandbox when there is one) on a read-only checkout of the PR head."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from fleet_core.conductor import Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.monitor import Monitor
from fleet_core.review.store import ReviewStore
from lifecycle_support import QUICK_RETRIES, base_fields, conductors, spawn, until_status

FAKES = Path(__file__).parent / "fake_clis"
S = TaskStatus


@pytest.fixture
async def engine(
    tmp_path: Path, db: Database, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Any]]:
    monkeypatch.setenv("PATH", f"{FAKES}:/usr/local/bin:/usr/bin:/bin")
    async with conductors(db) as make:

        def build(kind: str, model: str, **kw: Any) -> tuple[Conductor, Monitor]:
            fields = {**base_fields(tmp_path), **QUICK_RETRIES,
                      "reviews": {"kind": kind, "model": model}, **kw}  # fmt: skip
            return make(Settings(**fields))

        yield build


until = until_status


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
