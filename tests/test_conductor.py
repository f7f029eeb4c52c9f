"""The conductor end to end: real PostgreSQL, git, tmux, the launcher and the demo agent."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from conftest import Pg, eventually, git, grant_repo, origin_of
from fleet_core.audit import audit_trail
from fleet_core.conductor import Actor, Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import (
    ActiveTaskDeletionError,
    BadInputError,
    NoSessionError,
    RepositoryNotFoundError,
    SpawnDeniedError,
)
from fleet_core.events import EventBus, EventType, FleetEvent
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import SpawnRequest, Tier
from fleet_core.saga import SagaError

ALICE = Actor("alice", Tier.ARCHITECT)  # limit 3
HERE = Path(__file__).parent


def settings_for(tmp_path: Path, **kw: Any) -> Settings:
    fields: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "host_id": "test-host",
        "secrets": {"FLEET_DEMO_DELAY": "0"},
        "kill_grace_seconds": 1.0,
        "global_cap": None,
    }
    fields.update(kw)
    return Settings(**fields)


@pytest.fixture
async def repo(repo: Path, db: Database) -> Path:
    """The sample repository, granted to the operators these tests act as."""
    await grant_repo(db, repo, "alice", "bob", "eve")
    return repo


@pytest.fixture
async def make(tmp_path: Path, db: Database) -> AsyncIterator[Any]:
    made: list[Conductor] = []

    def build(bus: EventBus | None = None, **kw: Any) -> Conductor:
        c = Conductor.from_settings(settings_for(tmp_path, **kw), db, bus=bus)
        made.append(c)
        return c

    try:
        yield build
    finally:
        for c in made:
            await c.stop_engine()
        if made:
            await made[0].runtime.tmux.kill_server()


def request(repo: Path, description: str = "write the docs", **kw: Any) -> SpawnRequest:
    fields: dict[str, Any] = {
        "description": description,
        "repository": str(repo),
        "task_type": "docs",
        "agent_type": "demo",
    }
    fields.update(kw)
    return SpawnRequest.model_validate(fields)


async def test_spawn_runs_the_agent_with_the_hashed_prompt(make, repo: Path, db: Database) -> None:
    bus = EventBus()
    seen: list[FleetEvent] = []
    bus.subscribe("*", seen.append)
    c = make(bus=bus)
    out = await c.spawn(ALICE, request(repo, "Fix the parser crash on empty input"))
    rec = out.task
    assert rec is not None and rec.status is TaskStatus.RUNNING and rec.version == 2
    assert (
        rec.branch.startswith("fleet/fix-the-parser-crash-on-empty-") and rec.host_id == "test-host"
    )
    assert rec.tmux_session == f"fleet-{rec.id}" and rec.worktree_path and rec.spawned_at
    assert (rec.agent_type.value, rec.model) == ("demo", "demo")
    assert out.route is not None and out.route.reason.value == "agent_type_default"
    assert [(e.type, e.data.get("to")) for e in seen] == [
        (EventType.STATUS_CHANGED, "spawning"),
        (EventType.STATUS_CHANGED, "running"),
        (EventType.SPAWNED, None),
    ]
    assert seen[-1].data["routing_reason"] == "agent_type_default"
    # The demo agent committed the prompt it was given (the engine pushes it): its hash is
    # the one stored on the task.
    await eventually(lambda: c.runtime.exit_status(rec.id))
    assert await c.runtime.publish(repo, rec.id, rec.branch)
    pushed = git(origin_of(repo), "show", f"{rec.branch}:fleet-demo/{rec.id}.md")
    assert hashlib.sha256(pushed.encode()).hexdigest() == rec.prompt_hash
    assert "Fix the parser crash on empty input" in pushed and "## Safety" in pushed
    trail = await audit_trail(db, Tenant.operator("alice"), rec.id)
    assert [a["event_type"] for a in trail] == ["fleet.secrets_issued"]


async def test_stop_cancels_kills_and_frees_the_slot(make, repo: Path, db: Database) -> None:
    c = make()
    rec = (await c.spawn(ALICE, request(repo, "wait [demo:hang]"))).task
    assert rec is not None and await c.runtime.is_alive(rec.id)
    done = await c.stop(ALICE, str(rec.id)[:8])
    assert done.status is TaskStatus.CANCELLED and done.completed_at is not None
    assert await c.runtime.tmux.pane(rec.tmux_session or "") is None
    trail = await audit_trail(db, Tenant.operator("alice"), rec.id)
    assert trail[-1]["event_type"] == "fleet.cancelled" and trail[-1]["detail"] == {
        "by": "alice",
        "reason": "stopped",
    }
    again = await c.stop_task(ALICE, str(rec.id))  # idempotent: the task as it is
    assert (again.task.status, again.task.version) == (TaskStatus.CANCELLED, done.version)
    assert again.already_ended and not again.killed
    # Another operator cannot see it at all.
    with pytest.raises(Exception, match="not found"):
        await c.stop(Actor("bob", Tier.SOVEREIGN), str(rec.id))


async def test_stop_after_the_monitor_ended_the_task_settles_and_succeeds(
    make, repo: Path, db: Database
) -> None:
    """The monitor abandoned the task a moment before the operator's stop, while its agent
    still ran: the stop kills the agent and answers with the task as it is (abandoned)."""
    c = make()
    rec = (await c.spawn(ALICE, request(repo, "wait [demo:hang]"))).task
    assert rec is not None and await c.runtime.is_alive(rec.id)
    failed = await c.moves.move(rec, TaskStatus.FAILED, reason="timeout")
    abandoned = await c.moves.move(failed, TaskStatus.ABANDONED, reason="retry_budget_exhausted")
    out = await c.stop_task(ALICE, str(rec.id)[:8])
    assert out.already_ended and out.killed
    assert out.task.status is TaskStatus.ABANDONED and out.task.version == abandoned.version
    assert not await c.runtime.is_alive(rec.id)
    trail = await audit_trail(db, Tenant.operator("alice"), rec.id)
    assert [a["event_type"] for a in trail].count("fleet.cancelled") == 0  # not rewritten
    second = await c.stop_task(ALICE, str(rec.id))
    assert second.already_ended and not second.killed
    assert second.task.status is TaskStatus.ABANDONED


async def test_delete_only_terminal_and_keeps_unpushed_work(make, repo: Path) -> None:
    c = make()
    rec = (await c.spawn(ALICE, request(repo, "wait [demo:hang]"))).task
    assert rec is not None and rec.worktree_path
    with pytest.raises(ActiveTaskDeletionError):
        await c.delete(ALICE, str(rec.id))
    assert Path(rec.worktree_path).is_dir() and await c.runtime.is_alive(rec.id)
    await c.stop(ALICE, str(rec.id))
    (Path(rec.worktree_path) / "notes.txt").write_text("work in progress\n")
    gone = await c.delete(ALICE, str(rec.id))
    assert gone.cleanup is not None and gone.cleanup.patch is not None
    assert "notes.txt" in gone.cleanup.patch.read_text()
    assert not Path(rec.worktree_path).exists()
    with pytest.raises(Exception, match="not found"):
        await c.show(ALICE, str(rec.id))


async def test_logs_and_attach(make, repo: Path) -> None:
    c = make()
    rec = (await c.spawn(ALICE, request(repo, "say hello"))).task
    assert rec is not None
    await eventually(lambda: c.runtime.exit_status(rec.id))
    text = await c.logs(ALICE, str(rec.id), 50)
    assert "[demo] committed" in text and "agent exited with status 0" in text
    with pytest.raises(BadInputError, match="lines"):
        await c.logs(ALICE, str(rec.id), 0)
    with pytest.raises(NoSessionError, match="nothing to attach to, its agent has ended"):
        await c.attach_command(ALICE, str(rec.id))  # a dead pane: refused, with its log
    live = (await c.spawn(ALICE, request(repo, "wait [demo:hang]"))).task
    assert live is not None
    cmd = await c.attach_command(ALICE, str(live.id))
    assert cmd == [
        "tmux",
        "-L",
        c.runtime.paths.tmux_socket,
        "attach-session",
        "-t",
        f"={live.tmux_session}",
    ]


async def test_idempotency_key_returns_the_same_task(make, repo: Path) -> None:
    c = make()
    first = await c.spawn(ALICE, request(repo, idempotency_key="job-7"))
    again = await c.spawn(ALICE, request(repo, idempotency_key="job-7"))
    assert again.existing and again.task is not None and first.task is not None
    assert again.task.id == first.task.id
    assert await c.runtime.list_active() == [first.task.id]


async def no_side_effects(c: Conductor, su: asyncpg.Connection) -> None:
    assert await su.fetchval("SELECT count(*) FROM fleet_tasks") == 0
    assert await su.fetchval("SELECT count(*) FROM fleet_spawn_queue") == 0
    assert await c.runtime.list_active() == []
    worktrees = c.runtime.paths.worktrees
    assert not worktrees.exists() or list(worktrees.iterdir()) == []


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("repository", {"repository": "relative/path"}),
        ("repository", {"repository": "~/repo"}),
        ("base_branch", {"base_branch": "no-such-branch"}),
        ("base_branch", {"base_branch": "-x"}),
        ("agent_type", {"agent_type": "custom"}),
    ],
)
async def test_bad_input_writes_nothing(
    make, repo: Path, su: asyncpg.Connection, field: str, change: dict[str, Any]
) -> None:
    c = make()
    with pytest.raises(BadInputError) as err:
        await c.spawn(ALICE, request(repo, **change))
    assert err.value.field == field
    await no_side_effects(c, su)


@pytest.mark.parametrize("ref", ["/nonexistent/repo", "/tmp", "/tmp/../tmp", "nope", "{repo}/."])
async def test_a_repository_not_granted_is_one_answer(
    make, repo: Path, su: asyncpg.Connection, ref: str, tmp_path: Path
) -> None:
    """Missing, not a repository, someone else's: the same error, naming only what was sent."""
    c = make()
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q")  # a real repository, never granted to anyone
    ref = ref.format(repo=other)
    with pytest.raises(RepositoryNotFoundError) as err:
        await c.spawn(ALICE, request(repo, repository=ref))
    assert str(err.value) == f"no repository named {ref!r} is granted to you"
    assert err.value.to_dict() == {"error": "repository_not_found", "field": "repository",
                                   "message": str(err.value)}  # fmt: skip
    await no_side_effects(c, su)


async def test_spawn_by_name_and_by_path(make, repo: Path, db: Database) -> None:
    c = make()
    by_name = (await c.spawn(ALICE, request(repo, "one [demo:hang]", repository="repo"))).task
    by_path = (await c.spawn(ALICE, request(repo, "two [demo:hang]",
                                            repository=f"{repo}/"))).task  # fmt: skip
    assert by_name is not None and by_path is not None
    assert by_name.repository == by_path.repository == str(repo.resolve())
    with pytest.raises(RepositoryNotFoundError):  # granted to alice, bob, eve; not to mallory
        await c.spawn(Actor("mallory", Tier.SOVEREIGN), request(repo, repository="repo"))


async def assert_clean_failure(c: Conductor, err: SagaError, su: asyncpg.Connection) -> dict:
    row = await su.fetchrow("SELECT * FROM fleet_tasks WHERE id = $1::uuid", err.task_id)
    ctx = json.loads(row["failure_context"])
    assert row["status"] == "failed" and ctx["step"] == "runtime"
    assert await c.runtime.list_active() == []
    assert not (c.runtime.paths.worktrees / err.task_id).exists()
    assert not (c.runtime.paths.runs / err.task_id).exists()
    return ctx


async def test_setup_failure_is_compensated(make, repo: Path, su: asyncpg.Connection) -> None:
    c = make(repos={str(repo): {"setup": ["sh", "-c", "echo installing; exit 1"]}})
    with pytest.raises(SagaError) as err:
        await c.spawn(ALICE, request(repo))
    assert err.value.step == "runtime" and err.value.exit_code == 1
    ctx = await assert_clean_failure(c, err.value, su)
    assert ctx["runtime_step"] == "setup" and "installing" in ctx["output"]
    assert ctx["compensations"] == []  # the runtime undid its own work; later steps never ran
    branches = git(repo, "branch", "--list", "fleet/*")
    assert branches.strip() == ""


async def test_missing_agent_binary_is_refused_up_front(
    make, repo: Path, su: asyncpg.Connection
) -> None:
    """Bad input, naming the binary and the agents that are installed: no row, no process,
    and the model's breaker untouched (the model did nothing wrong)."""
    c = make(agents={"custom": {"command": ["/nonexistent/fleet-agent", "--model", "{model}"]}})
    for _ in range(3):
        with pytest.raises(BadInputError) as err:
            await c.spawn(ALICE, request(repo, agent_type="custom", model="m1"))
        assert err.value.field == "agent_type"
        assert "/nonexistent/fleet-agent (for custom) is not installed" in err.value.message
        assert "installed: " in err.value.message and "demo" in err.value.message
    assert await su.fetchval("SELECT count(*) FROM fleet_tasks") == 0
    assert await c.runtime.list_active() == []
    assert c.router.breaker_state("m1") != "open"


async def test_queued_spawn_whose_repository_vanished_fails_cleanly(
    make, repo: Path, su: asyncpg.Connection
) -> None:
    c = make(tier_limits={"builder": 1})
    bob = Actor("bob", Tier.BUILDER)
    running = (await c.spawn(bob, request(repo, "wait [demo:hang]"))).task
    queued = (await c.spawn(bob, request(repo, "later"), queue=True)).queued
    assert running is not None and queued is not None and queued.position == 1
    summary = await c.status(bob)
    assert (summary.active, summary.queued, [t.id for t in summary.tasks]) == (1, 1, [running.id])
    shutil.rmtree(repo)
    await c.stop(bob, str(running.id))  # frees the slot: the queued spawn is admitted and fails
    rows = await su.fetch(
        "SELECT status, failure_context FROM fleet_tasks WHERE description = 'later'"
    )
    assert [r["status"] for r in rows] == ["failed"]
    assert json.loads(rows[0]["failure_context"])["step"] == "runtime"
    assert await su.fetchval("SELECT count(*) FROM fleet_spawn_queue") == 0


async def test_precheck_and_gate_deny_over_the_limit(make, repo: Path) -> None:
    bus = EventBus()
    denied: list[FleetEvent] = []
    bus.subscribe(EventType.SPAWN_DENIED, denied.append)
    c = make(bus=bus)
    bob = Actor("bob", Tier.BUILDER)
    await c.spawn(bob, request(repo, "wait [demo:hang]"))
    with pytest.raises(SpawnDeniedError) as err:
        await c.spawn(bob, request(repo, "second"))
    assert err.value.active == 1 and err.value.limit == 1 and len(denied) == 1
    with pytest.raises(SpawnDeniedError):
        await c.spawn(Actor("eve", Tier.OBSERVER), request(repo))


async def test_two_processes_two_hundred_spawns_then_the_queue_drains_in_order(
    make, repo: Path, pg: Pg, su: asyncpg.Connection, tmp_path: Path
) -> None:
    """200 concurrent spawns for one operator (limit 3) from two engine processes."""
    doc = {
        "settings": {
            "data_dir": str(tmp_path / "data"),
            "host_id": "test-host",
            "secrets": {"FLEET_DEMO_DELAY": "0"},
            "global_cap": None,
        },
        "dsn": pg.engine_dsn,
        "operator": "alice",
        "tier": "architect",
        "repo": str(repo),
        "count": 100,
        "queue_every": 10,  # one request in ten asks to wait in the queue
    }
    procs = []
    for tag in ("p1", "p2"):
        arg = json.dumps({**doc, "tag": tag})
        argv = [sys.executable, str(HERE / "spawn_worker.py"), arg]
        pipe = subprocess.PIPE
        procs.append(subprocess.Popen(argv, stdin=pipe, stdout=pipe, stderr=pipe, text=True))
    for p in procs:
        assert p.stdout is not None
        if p.stdout.readline().strip() != "ready":  # it died before: say why (seen once in CI)
            for q in procs:
                q.kill()
            pytest.fail(f"a spawn worker did not start: {p.communicate(timeout=30)[1][-3000:]}")
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    outcomes = []
    for p in procs:
        out, errors = p.communicate(timeout=120)
        assert p.returncode == 0, errors
        outcomes += [json.loads(line) for line in out.splitlines()]
    assert len(outcomes) == 200
    kinds = [o["outcome"] for o in outcomes]
    assert kinds.count("admitted") == 3
    assert kinds.count("admitted") + kinds.count("queued") + kinds.count("denied") == 200
    assert all(o["status"] == "running" for o in outcomes if o["outcome"] == "admitted")
    queued_rows = await su.fetch("SELECT id, idempotency_key FROM fleet_spawn_queue ORDER BY id")
    assert len(queued_rows) == kinds.count("queued") > 0
    assert await su.fetchval("SELECT count(*) FROM fleet_tasks") == 3

    # As tasks end, the queue drains in order, three at a time, each entry once.
    c = make()
    admitted_keys: list[str] = []
    while True:
        live = await c.registry(ALICE).query(status=[TaskStatus.RUNNING])
        assert len(live) <= 3
        if not live:
            break
        for rec in live:
            await c.stop(ALICE, str(rec.id))
        keys = await su.fetch(
            "SELECT idempotency_key FROM fleet_tasks WHERE status = 'running' ORDER BY created_at"
        )
        admitted_keys += sorted(
            (k["idempotency_key"] for k in keys),
            key=[r["idempotency_key"] for r in queued_rows].index,
        )
    assert admitted_keys == [r["idempotency_key"] for r in queued_rows]
    total = await su.fetchval("SELECT count(*) FROM fleet_tasks")
    assert total == 3 + len(queued_rows)
    assert await su.fetchval("SELECT count(*) FROM fleet_spawn_queue") == 0


async def test_background_loop_admits_queued_work(make, repo: Path, su: asyncpg.Connection) -> None:
    c = make(tier_limits={"builder": 1}, queue_poll_seconds=0.1)
    bob = Actor("bob", Tier.BUILDER)
    first = (await c.spawn(bob, request(repo, "wait [demo:hang]"))).task
    assert first is not None
    await c.spawn(bob, request(repo, "next one"), queue=True)
    # Another engine (or process) ends the first task; this engine's loop notices the slot.
    other = make()
    await other.registry(bob).transition(
        first.id, TaskStatus.CANCELLED, expected_version=first.version
    )
    await c.start()

    async def admitted() -> bool:
        return (
            await su.fetchval(
                "SELECT count(*) FROM fleet_tasks WHERE description = 'next one' AND status = 'running'"
            )
            == 1
        )

    await eventually(admitted)
    await c.stop_engine()
