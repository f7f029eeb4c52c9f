"""INV-014 … INV-018: each verify is clean after normal work and finds a violation made on
purpose behind the engine's back (as the superuser, or straight through tmux)."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from conftest import grant_repo, new_task
from fleet_core.conductor import Actor, Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database
from fleet_core.governor import Limits
from fleet_core.invariants import (
    verify_all,
    verify_inv014,
    verify_inv015,
    verify_inv016,
    verify_inv017,
    verify_inv018,
)
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import SpawnRequest, Tier
from fleet_core.registry import TaskRegistry

INSERT = (
    "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description, branch,"
    " repository, status) VALUES ($1, 'demo', 'm', 'docs', 'd', $2, '/r', $3) RETURNING id"
)


@pytest.fixture
async def repo(repo: Path, db: Database) -> Path:
    """The sample repository, granted to alice (a spawn names a granted repository)."""
    await grant_repo(db, repo, "alice")
    return repo


@pytest.fixture
async def conductor(tmp_path: Path, db: Database) -> AsyncIterator[Conductor]:
    settings = Settings(
        data_dir=tmp_path / "data", host_id="test-host", secrets={"FLEET_DEMO_DELAY": "0"}
    )
    c = Conductor.from_settings(settings, db)
    try:
        yield c
    finally:
        await c.runtime.tmux.kill_server()


async def test_all_clean_after_normal_work(conductor: Conductor, repo: Path, db: Database) -> None:
    actor = Actor("alice", Tier.ARCHITECT)
    req = SpawnRequest(
        description="wait [demo:hang]", repository=str(repo), task_type="docs", agent_type="demo"
    )
    first = (await conductor.spawn(actor, req)).task
    await conductor.spawn(actor, req)
    assert first is not None
    await conductor.stop(actor, str(first.id))
    found = await verify_all(db, conductor.runtime, conductor.governor.limits, Tier.ARCHITECT)
    assert found == {k: [] for k in ("INV-014", "INV-015", "INV-016", "INV-017", "INV-018")}


async def test_inv014_over_the_limit(db: Database, su: asyncpg.Connection) -> None:
    for i in range(4):
        await su.execute(INSERT, "alice", f"a{i}", "running")
    for i in range(2):
        await su.execute(INSERT, "bob", f"b{i}", "pr_created")
    await su.execute("INSERT INTO fleet_config (operator_id, tier) VALUES ('bob', 'builder')")
    found = await verify_inv014(db, Limits(), Tier.ARCHITECT)
    assert sorted((v.operator_id, v.detail) for v in found) == [
        ("alice", "4 slot-holding tasks, limit 3 (tier architect)"),
        ("bob", "2 slot-holding tasks, limit 1 (tier builder)"),
    ]
    # With sovereign (10) as the default tier only bob, whose stored tier binds, is over.
    assert [v.operator_id for v in await verify_inv014(db, Limits(), Tier.SOVEREIGN)] == ["bob"]


async def test_inv015_untracked_and_lost_agents(
    conductor: Conductor, repo: Path, db: Database
) -> None:
    actor = Actor("alice", Tier.ARCHITECT)
    req = SpawnRequest(
        description="wait [demo:hang]", repository=str(repo), task_type="docs", agent_type="demo"
    )
    rec = (await conductor.spawn(actor, req)).task
    assert rec is not None and await verify_inv015(db, conductor.runtime) == []
    await conductor.runtime.tmux.kill_session(rec.tmux_session or "")  # the agent vanishes
    stray = uuid.uuid4()  # an agent session no row knows
    subprocess.run(
        ["tmux", "-L", conductor.runtime.paths.tmux_socket, "new-session", "-d", "-s",
         f"fleet-{stray}", "sleep", "60"],
        check=True,
    )  # fmt: skip
    found = await verify_inv015(db, conductor.runtime)
    assert sorted((str(v.task_id), v.detail.split(" ")[0]) for v in found) == sorted(
        [(str(stray), "agent"), (str(rec.id), "task")]
    )


async def test_inv016_terminal_without_audit(
    db: Database, su: asyncpg.Connection, alice: TaskRegistry
) -> None:
    rec = await alice.create(new_task())
    await alice.transition(rec.id, TaskStatus.CANCELLED, expected_version=0)
    assert await verify_inv016(db) == []
    await su.execute("DELETE FROM fleet_audit WHERE task_id = $1", rec.id)
    forged = await su.fetchval(INSERT, "alice", "x", "merged")  # terminal, never audited
    found = await verify_inv016(db)
    assert sorted(str(v.task_id) for v in found) == sorted([str(rec.id), str(forged)])


async def test_inv017_retry_budget(db: Database, su: asyncpg.Connection, alice) -> None:
    rec = await alice.create(new_task(max_retries=1))
    assert await alice.record_failure(rec.id, {"e": 1}, expected_version=0) is not None
    assert (
        await alice.record_failure(rec.id, {"e": 2}, expected_version=1) is None
    )  # the guard holds
    with pytest.raises(asyncpg.CheckViolationError):
        await su.execute("UPDATE fleet_tasks SET retry_count = 5 WHERE id = $1", rec.id)
    assert await verify_inv017(db) == []
    # Only with the CHECK dropped can the budget be broken; verify finds it.
    await su.execute("ALTER TABLE fleet_tasks DROP CONSTRAINT valid_retry_count")
    try:
        await su.execute("UPDATE fleet_tasks SET retry_count = 5 WHERE id = $1", rec.id)
        found = await verify_inv017(db)
        assert [(v.task_id, v.detail) for v in found] == [
            (rec.id, "retry_count 5 exceeds max_retries 1")
        ]
    finally:
        await su.execute("UPDATE fleet_tasks SET retry_count = 0")
        await su.execute(
            "ALTER TABLE fleet_tasks ADD CONSTRAINT valid_retry_count "
            "CHECK (retry_count >= 0 AND retry_count <= max_retries)"
        )


async def test_inv018_terminal_without_notification(
    db: Database, su: asyncpg.Connection, alice: TaskRegistry
) -> None:
    rec = await alice.create(new_task())
    await alice.transition(rec.id, TaskStatus.CANCELLED, expected_version=0)
    assert await verify_inv018(db) == []
    await su.execute("DELETE FROM fleet_outbox")
    assert [v.task_id for v in await verify_inv018(db)] == [rec.id]
    await su.execute(
        "INSERT INTO fleet_notifications (task_id, channel, payload, operator_id) "
        "VALUES ($1, 'cli', '{}', 'alice')",
        rec.id,
    )
    assert await verify_inv018(db) == []
