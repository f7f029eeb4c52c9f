"""TaskRegistry against the real database: CRUD, every status pair, races, audit/outbox."""

from __future__ import annotations

import asyncio
import itertools
import uuid

import asyncpg
import pytest

from conftest import new_task
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import (
    ActiveTaskDeletionError,
    AmbiguousTaskIdError,
    BadInputError,
    DuplicateTaskError,
    InvalidTransitionError,
    StaleVersionError,
    TaskNotFoundError,
)
from fleet_core.lifecycle import SLOT_HOLDING, TERMINAL, TaskStatus, can_transition
from fleet_core.models import CiStatus, TaskRecord, TaskType
from fleet_core.registry import TaskRegistry

S = TaskStatus


async def at_status(su: asyncpg.Connection, reg: TaskRegistry, status: TaskStatus, **kw: object):
    rec = await reg.create(new_task(**kw))
    await su.execute("UPDATE fleet_tasks SET status = $2 WHERE id = $1", rec.id, status.value)
    return await reg.get(rec.id)


async def test_create_defaults(alice: TaskRegistry) -> None:
    rec = await alice.create(new_task())
    assert isinstance(rec.id, uuid.UUID)
    assert rec.status is S.PROPOSED
    assert rec.version == 0
    assert rec.retry_count == 0
    assert rec.operator_id == "alice"
    assert rec.context_overrides == {}
    assert await alice.get(rec.id) == rec


async def test_get_unknown_raises_and_find_returns_none(alice: TaskRegistry) -> None:
    missing = uuid.uuid4()
    assert await alice.find(missing) is None
    with pytest.raises(TaskNotFoundError):
        await alice.get(missing)
    with pytest.raises(BadInputError) as err:
        await alice.get("not-a-uuid")
    assert err.value.field == "task_id"


async def test_idempotency_key_unique_per_operator(alice: TaskRegistry, bob: TaskRegistry) -> None:
    first = await alice.create(new_task(idempotency_key="k1"))
    with pytest.raises(DuplicateTaskError) as err:
        await alice.create(new_task(idempotency_key="k1", description="other"))
    assert err.value.existing_id == str(first.id)
    # Another operator may use the same key.
    await bob.create(new_task(idempotency_key="k1"))
    assert len(await alice.query()) == 1


async def test_query_filters_and_limit(su: asyncpg.Connection, alice: TaskRegistry) -> None:
    a = await alice.create(new_task(task_type=TaskType.DOCS))
    b = await at_status(su, alice, S.RUNNING)
    c = await at_status(su, alice, S.MERGED)
    assert [r.id for r in await alice.query()] == [c.id, b.id, a.id]
    assert [r.id for r in await alice.query(status=S.RUNNING)] == [b.id]
    assert {r.id for r in await alice.query(status=[S.RUNNING, S.MERGED])} == {b.id, c.id}
    assert [r.id for r in await alice.query(task_type=TaskType.DOCS)] == [a.id]
    assert len(await alice.query(limit=2)) == 2
    assert await alice.query(since=c.created_at) == [c]
    with pytest.raises(BadInputError):
        await alice.query(limit=0)


async def test_counts_and_summary(su: asyncpg.Connection, alice: TaskRegistry) -> None:
    for status in TaskStatus:
        await at_status(su, alice, status)
    assert await alice.count_active("alice") == len(SLOT_HOLDING)
    assert await alice.count_all_active() == len(SLOT_HOLDING)
    summary = await alice.summary(limit=3)
    assert (summary.active, summary.completed, summary.failed) == (7, 1, 4)
    assert len(summary.tasks) == 3  # counts cover all tasks, not just the page
    live = await alice.list_live()
    assert {r.status for r in live} == set(TaskStatus) - TERMINAL


async def test_resolve_prefix(su: asyncpg.Connection, alice: TaskRegistry) -> None:
    ids = ["aaaa1111-0000-4000-8000-000000000001", "aaaa2222-0000-4000-8000-000000000002"]
    for tid in ids:
        rec = await alice.create(new_task())
        await su.execute("UPDATE fleet_tasks SET id = $2 WHERE id = $1", rec.id, uuid.UUID(tid))
    assert str((await alice.resolve("aaaa1")).id) == ids[0]
    assert str((await alice.resolve(ids[1].upper())).id) == ids[1]
    with pytest.raises(AmbiguousTaskIdError):
        await alice.resolve("aaaa")
    with pytest.raises(TaskNotFoundError):
        await alice.resolve("bbbb")
    with pytest.raises(BadInputError):
        await alice.resolve("ab")


@pytest.mark.parametrize(
    ("src", "dst"), list(itertools.product(TaskStatus, TaskStatus)), ids=lambda s: s.value
)
async def test_every_status_pair(
    su: asyncpg.Connection, alice: TaskRegistry, src: TaskStatus, dst: TaskStatus
) -> None:
    rec = await at_status(su, alice, src)
    if can_transition(src, dst):
        after = await alice.transition(rec.id, dst, expected_version=rec.version)
        assert after.status is dst
        assert after.version == rec.version + 1
        assert (after.completed_at is not None) == (dst in TERMINAL)
    else:
        with pytest.raises(InvalidTransitionError) as err:
            await alice.transition(rec.id, dst, expected_version=rec.version)
        assert (err.value.from_status, err.value.to_status) == (src.value, dst.value)
        assert await alice.get(rec.id) == rec  # nothing changed


async def test_transition_errors(alice: TaskRegistry) -> None:
    rec = await alice.create(new_task())
    with pytest.raises(StaleVersionError) as err:
        await alice.transition(rec.id, S.SPAWNING, expected_version=7)
    assert (err.value.expected, err.value.actual) == (7, 0)
    with pytest.raises(TaskNotFoundError):
        await alice.transition(uuid.uuid4(), S.SPAWNING, expected_version=0)


async def test_transition_writes_metadata(alice: TaskRegistry) -> None:
    rec = await alice.create(new_task())
    rec = await alice.transition(rec.id, S.SPAWNING, expected_version=0)
    rec = await alice.transition(
        rec.id,
        S.RUNNING,
        expected_version=rec.version,
        update={"tmux_session": "fleet-x", "worktree_path": "/w/x", "host_id": "h1"},
    )
    assert (rec.tmux_session, rec.worktree_path, rec.host_id) == ("fleet-x", "/w/x", "h1")
    rec = await alice.transition(
        rec.id, S.PR_CREATED, expected_version=rec.version, update={"pr_number": 12}
    )
    assert rec.pr_number == 12 and rec.status is S.PR_CREATED
    with pytest.raises(ValueError, match="pr_number"):
        await alice.transition(rec.id, S.REVIEWING, expected_version=rec.version,
                               update={"pr_number": -1})  # fmt: skip


async def test_two_writers_one_version(alice: TaskRegistry) -> None:
    rec = await alice.create(new_task())
    results = await asyncio.gather(
        alice.transition(rec.id, S.SPAWNING, expected_version=0),
        alice.transition(rec.id, S.CANCELLED, expected_version=0),
        return_exceptions=True,
    )
    wins = [r for r in results if not isinstance(r, BaseException)]
    losses = [r for r in results if isinstance(r, StaleVersionError)]
    assert len(wins) == 1 and len(losses) == 1
    assert (await alice.get(rec.id)).status is wins[0].status


async def test_update_metadata_is_versioned(alice: TaskRegistry) -> None:
    rec = await alice.create(new_task())
    after = await alice.update_metadata(rec.id, {"ci_status": "passing"}, expected_version=0)
    assert after.ci_status is CiStatus.PASSING
    assert after.status is S.PROPOSED and after.version == 1
    assert after.updated_at > rec.updated_at  # trigger
    with pytest.raises(StaleVersionError):
        await alice.update_metadata(rec.id, {"ci_status": "failing"}, expected_version=0)
    with pytest.raises(BadInputError):
        await alice.update_metadata(rec.id, {}, expected_version=1)
    cleared = await alice.update_metadata(rec.id, {"ci_status": None}, expected_version=1)
    assert cleared.ci_status is None


async def test_record_failure_race_never_passes_max(pg, db: Database) -> None:
    reg = TaskRegistry(db, Tenant.operator("alice"))
    rec = await reg.create(new_task(max_retries=3))

    async def count(i: int) -> TaskRecord | StaleVersionError | None:
        try:
            return await reg.record_failure(rec.id, {"attempt": i}, expected_version=rec.version)
        except StaleVersionError as exc:
            return exc

    # Ten separate connections (the pool holds at most ten) racing on one row at one version:
    # exactly one counts, the others are told their read is stale.
    results = await asyncio.gather(*(count(i) for i in range(10)))
    counted = [r for r in results if isinstance(r, TaskRecord)]
    assert len(counted) == 1 and counted[0].retry_count == 1
    assert sum(isinstance(r, StaleVersionError) for r in results) == 9
    cur = counted[0]
    for n in (2, 3):
        cur = await reg.record_failure(rec.id, {"n": n}, expected_version=cur.version)
        assert cur is not None and cur.retry_count == n
    final = await reg.get(rec.id)
    assert final.retry_count == 3 and final.version == 3
    assert await reg.record_failure(rec.id, {"again": True}, expected_version=3) is None
    with pytest.raises(StaleVersionError):  # spent, but the stale read is what is reported
        await reg.record_failure(rec.id, {"again": True}, expected_version=2)
    assert (await reg.get(rec.id)).failure_context == {"n": 3}


async def test_record_failure_checks_the_version(alice: TaskRegistry) -> None:
    rec = await alice.create(new_task(max_retries=3))
    moved = await alice.update_metadata(rec.id, {"ci_status": "failing"}, expected_version=0)
    with pytest.raises(StaleVersionError) as err:
        await alice.record_failure(rec.id, {"e": 1}, expected_version=rec.version)
    assert (err.value.expected, err.value.actual) == (0, 1)
    after = await alice.get(rec.id)
    assert (after.retry_count, after.version, after.failure_context) == (
        0,
        1,
        moved.failure_context,
    )


async def test_delete_only_terminal(su: asyncpg.Connection, alice: TaskRegistry) -> None:
    for status in TaskStatus:
        rec = await at_status(su, alice, status)
        if status in TERMINAL:
            assert (await alice.delete(rec.id)).id == rec.id
            assert await alice.find(rec.id) is None
        else:
            with pytest.raises(ActiveTaskDeletionError):
                await alice.delete(rec.id)
            assert await alice.find(rec.id) is not None
    with pytest.raises(TaskNotFoundError):
        await alice.delete(uuid.uuid4())


async def test_terminal_transition_audits_and_queues_in_same_tx(
    su: asyncpg.Connection, db: Database, alice: TaskRegistry
) -> None:
    rec = await alice.create(new_task())
    done = await alice.transition(rec.id, S.CANCELLED, expected_version=0,
                                  audit_detail={"by": "test"})  # fmt: skip
    rows = await su.fetch("SELECT * FROM fleet_audit WHERE task_id = $1", rec.id)
    assert [(r["event_type"], r["from_status"], r["to_status"]) for r in rows] == [
        ("fleet.cancelled", "proposed", "cancelled")
    ]
    outbox = await su.fetch("SELECT * FROM fleet_outbox")
    assert [(r["event_type"], r["dedup_key"]) for r in outbox] == [
        ("task.cancelled", f"{rec.id}:cancelled")
    ]
    # Rolled back together: a failure after the transition leaves neither row behind.
    other = await alice.create(new_task())
    with pytest.raises(RuntimeError):
        async with db.tx(Tenant.operator("alice")) as conn:
            await alice.transition(other.id, S.CANCELLED, expected_version=0, conn=conn)
            raise RuntimeError("boom")
    assert (await alice.get(other.id)).status is S.PROPOSED
    assert await su.fetchval("SELECT count(*) FROM fleet_audit") == 1
    assert await su.fetchval("SELECT count(*) FROM fleet_outbox") == 1
    # The trail outlives the task row.
    await alice.delete(done.id)
    assert await su.fetchval("SELECT count(*) FROM fleet_audit WHERE task_id=$1", rec.id) == 1
