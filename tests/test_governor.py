"""The governor against real PostgreSQL: limits, the gate under concurrency, the queue,
tier downgrades, the global cap, idempotency and the pre-check cache."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from conftest import new_task
from fleet_core.config import load_settings
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import ConfigError, SpawnDeniedError, StaleVersionError
from fleet_core.events import EventBus, EventType, FleetEvent
from fleet_core.governor import Admitted, Governor, Limits
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import NewTask, Tier
from fleet_core.registry import TaskRegistry
from fleet_core.spawn_queue import Queued

ARCHITECT = Tier.ARCHITECT  # limit 3


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def task(i: int = 0, **kw: object) -> NewTask:
    return new_task(branch=f"fleet/t-{i}", **kw)


async def admit_many(gov: Governor, n: int, *, operator: str = "alice", queue: bool = False):
    async def one(i: int):
        try:
            return await gov.admit(task(i), operator_id=operator, tier=ARCHITECT, queue=queue)
        except SpawnDeniedError as exc:
            return exc

    return await asyncio.gather(*(one(i) for i in range(n)))


async def test_limits_per_tier_and_typed_denial(db: Database) -> None:
    events: list[FleetEvent] = []
    bus = EventBus()
    bus.subscribe(EventType.SPAWN_DENIED, events.append)
    gov = Governor(db, Limits(), bus)
    first = await gov.admit(task(1), operator_id="bob", tier=Tier.BUILDER)
    assert isinstance(first, Admitted) and first.task.status is TaskStatus.PROPOSED
    with pytest.raises(SpawnDeniedError) as denied:
        await gov.admit(task(2), operator_id="bob", tier=Tier.BUILDER)
    err = denied.value
    assert (err.operator_id, err.tier, err.active, err.limit, err.reason) == (
        "bob", "builder", 1, 1, "tier_limit"
    )  # fmt: skip
    assert "--queue" in err.hint and "architect allows 3" in err.hint
    assert err.exit_code == 4 and err.to_dict()["error"] == "spawn_denied"
    assert [e.data["active"] for e in events] == [1]
    for tier in (Tier.OBSERVER, Tier.PARTICIPANT):
        with pytest.raises(SpawnDeniedError, match="no fleet access") as none:
            await gov.admit(task(3), operator_id="carol", tier=tier, queue=True)
        assert none.value.reason == "no_fleet_access"  # not queueable either


def test_limits_in_config_are_validated() -> None:
    assert load_settings(tier_limits={"builder": 2}).tier_limits == {Tier.BUILDER: 2}
    for bad, field in [({"tier_limits": {"wizard": 1}}, "tier_limits.wizard"),
                       ({"tier_limits": {"builder": -1}}, "tier_limits.builder"),
                       ({"global_cap": 0}, "global_cap")]:  # fmt: skip
        with pytest.raises(ConfigError, match=rf"config error: {field} "):
            load_settings(**bad)


async def test_two_hundred_concurrent_admissions_admit_exactly_the_limit(
    db: Database, alice: TaskRegistry
) -> None:
    gov = Governor(db, Limits(global_cap=None))
    results = await admit_many(gov, 200)
    admitted = [r for r in results if isinstance(r, Admitted)]
    assert len(admitted) == 3
    assert all(
        isinstance(r, SpawnDeniedError) and r.active == 3 for r in results if r not in admitted
    )
    assert await alice.count_active("alice") == 3


async def test_queue_holds_no_slot_and_drains_fifo_exactly_once(
    db: Database, alice: TaskRegistry
) -> None:
    gov = Governor(db, Limits(global_cap=None))
    results = await admit_many(gov, 40, queue=True)
    admitted = [r for r in results if isinstance(r, Admitted)]
    queued = [r for r in results if isinstance(r, Queued)]
    assert len(admitted) == 3 and len(queued) == 37
    assert sorted(q.position for q in queued) == list(range(1, 38))
    entries = await gov.queue(Tenant.operator("alice"))
    assert [e.id for e in entries] == sorted(q.entry_id for q in queued)
    # A direct spawn may not jump the line, even when a slot is free.
    reg = TaskRegistry(db, Tenant.operator("alice"))
    done = await reg.transition(admitted[0].task.id, TaskStatus.CANCELLED, expected_version=0)
    with pytest.raises(SpawnDeniedError) as ahead:
        await gov.admit(task(99), operator_id="alice", tier=ARCHITECT)
    assert ahead.value.reason == "queued_ahead" and ahead.value.queued_ahead == 37
    assert done.status is TaskStatus.CANCELLED

    def build(entry):
        return NewTask.model_validate(entry.request["task"])

    # Two engines drain at once, repeatedly, as slots free: every entry once, in order.
    order: list[int] = []
    while True:
        got = await asyncio.gather(*(gov.take_queued("alice", build) for _ in range(4)))
        taken = [g for g in got if g is not None]
        order += sorted(entry.id for entry, _ in taken)  # each round: the next ones in line
        if not taken:
            live = await reg.query(status=[TaskStatus.PROPOSED])
            if not live:
                break
            for rec in live:
                await reg.transition(rec.id, TaskStatus.CANCELLED, expected_version=rec.version)
    assert order == [e.id for e in entries]
    assert await gov.queue(Tenant.operator("alice")) == []
    assert len(await reg.query(limit=1000)) == 40


async def test_queued_entry_waits_for_the_limit(db: Database) -> None:
    gov = Governor(db, Limits(global_cap=None))
    await admit_many(gov, 4, queue=True)
    assert (
        await gov.take_queued("alice", lambda e: NewTask.model_validate(e.request["task"])) is None
    )
    assert len(await gov.queue(Tenant.operator("alice"))) == 1


async def test_tier_downgrade_between_precheck_and_gate(db: Database) -> None:
    clock = Clock()
    gov = Governor(db, Limits(), clock=clock)
    await gov.admit(task(1), operator_id="alice", tier=ARCHITECT)
    gov.precheck("alice", ARCHITECT)  # 1 of 3: passes
    await gov.set_tier("alice", Tier.BUILDER)  # an admin downgrades alice meanwhile
    with pytest.raises(SpawnDeniedError) as denied:
        await gov.admit(task(2), operator_id="alice", tier=ARCHITECT)
    assert (denied.value.tier, denied.value.limit, denied.value.active) == ("builder", 1, 1)
    await gov.set_tier("alice", None)
    assert isinstance(await gov.admit(task(3), operator_id="alice", tier=ARCHITECT), Admitted)


async def test_global_cap_across_operators(db: Database) -> None:
    events: list[FleetEvent] = []
    bus = EventBus()
    bus.subscribe("*", events.append)
    gov = Governor(db, Limits(global_cap=5), bus)
    for i, op in enumerate(["a1", "a2", "a3", "a4"]):
        await gov.admit(task(i), operator_id=op, tier=ARCHITECT)
    assert [e.type for e in events] == [EventType.CAPACITY_WARNING]  # 4 of 5 = 80 %
    results = await asyncio.gather(
        *(gov.admit(task(10 + i), operator_id=f"b{i}", tier=ARCHITECT) for i in range(6)),
        return_exceptions=True,
    )
    assert sum(isinstance(r, Admitted) for r in results) == 1
    denials = [r for r in results if isinstance(r, SpawnDeniedError)]
    assert len(denials) == 5 and {d.reason for d in denials} == {"global_cap"}
    admin = TaskRegistry(db, Tenant.admin())
    assert await admin.count_all_active() == 5
    for rec in await admin.query(limit=10):
        await admin.transition(rec.id, TaskStatus.CANCELLED, expected_version=rec.version)
    assert await gov.observe_capacity() == 0
    assert events[-1].type is EventType.CAPACITY_RESTORED


async def test_idempotency_key_returns_the_earlier_task_or_queue_entry(db: Database) -> None:
    gov = Governor(db, Limits())
    first = await gov.admit(task(1, idempotency_key="k1"), operator_id="bob", tier=Tier.BUILDER)
    again = await gov.admit(task(2, idempotency_key="k1"), operator_id="bob", tier=Tier.BUILDER)
    assert isinstance(again, Admitted) and again.existing and again.task.id == first.task.id
    q1 = await gov.admit(task(3, idempotency_key="k2"), operator_id="bob", tier=Tier.BUILDER,
                         queue=True)  # fmt: skip
    q2 = await gov.admit(task(4, idempotency_key="k2"), operator_id="bob", tier=Tier.BUILDER,
                         queue=True)  # fmt: skip
    assert isinstance(q1, Queued) and isinstance(q2, Queued)
    assert q2.existing and q2.entry_id == q1.entry_id
    # Without a key, two identical requests are two tasks.
    plain = Governor(db, Limits())
    a = await plain.admit(task(5), operator_id="dave", tier=ARCHITECT)
    b = await plain.admit(task(5), operator_id="dave", tier=ARCHITECT)
    assert isinstance(a, Admitted) and isinstance(b, Admitted) and a.task.id != b.task.id


async def test_precheck_cache_ttl_and_invalidation(db: Database) -> None:
    clock = Clock()
    bus = EventBus()
    gov = Governor(db, Limits(), bus, clock=clock)
    first = await gov.admit(task(1), operator_id="bob", tier=Tier.BUILDER)
    assert gov.cached_active("bob") == 1
    with pytest.raises(SpawnDeniedError):
        gov.precheck("bob", Tier.BUILDER)  # no database round trip
    gov.precheck("bob", ARCHITECT)  # the limit comes from the tier asked with, never cached
    clock.now += 5.1
    assert gov.cached_active("bob") is None
    gov.precheck("bob", Tier.BUILDER)  # stale: the gate decides
    clock.now -= 5.1
    await bus.emit(EventType.CANCELLED, operator_id="bob", task_id=first.task.id)
    assert gov.cached_active("bob") is None


async def test_gate_denies_even_with_an_empty_cache(db: Database, su: asyncpg.Connection) -> None:
    # Rows written by another engine are counted: the gate reads the database.
    for i in range(3):
        await su.execute(
            "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description,"
            " branch, repository, status) VALUES ('alice','demo','m','docs','d',$1,'/r','running')",
            f"b{i}",
        )
    gov = Governor(db, Limits())
    gov.precheck("alice", ARCHITECT)
    with pytest.raises(SpawnDeniedError):
        await gov.admit(task(1), operator_id="alice", tier=ARCHITECT)


async def test_readmit_on_a_stale_read_changes_nothing(
    db: Database, su: asyncpg.Connection
) -> None:
    """A retry decided on an old read of the task (it changed since) is refused as stale: the
    failure is not counted and the task does not move (DESIGN §3: every write is versioned)."""
    gov = Governor(db, Limits(), EventBus())
    registry = TaskRegistry(db, Tenant.operator("alice"))
    rec = await registry.create(task(1, max_retries=3))
    await su.execute("UPDATE fleet_tasks SET status = 'failed' WHERE id = $1", rec.id)
    read = await registry.get(rec.id)
    await registry.update_metadata(rec.id, {"ci_status": "failing"}, expected_version=read.version)
    with pytest.raises(StaleVersionError):
        await gov.readmit(read, tier=ARCHITECT, count_failure=True, update={})
    now = await registry.get(rec.id)
    assert (now.status, now.retry_count, now.version) == (TaskStatus.FAILED, 0, read.version + 1)
    fresh = await gov.readmit(now, tier=ARCHITECT, count_failure=True, update={})
    assert fresh is not None and (fresh.status, fresh.retry_count) == (TaskStatus.RETRYING, 1)
