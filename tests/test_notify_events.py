"""Which events reach the outbox and which reach an operator: every transition is an event
(in its transaction), a queued spawn's admission, stalls and pauses from the bus, a monitor
failing cycles in a row; the default filter keeps what needs the operator."""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from conftest import new_task
from fleet_core.db.database import Database
from fleet_core.events import EventBus, EventType
from fleet_core.lifecycle import TaskStatus as S
from fleet_core.notify.bus_events import EventQueuer
from fleet_core.notify.events import ALL_SOVEREIGNS, EVENT_TYPES, message, wanted
from fleet_core.registry import TaskRegistry
from notify_support import wait_for


async def test_every_transition_is_an_event_in_its_transaction(
    su: asyncpg.Connection, alice: TaskRegistry
) -> None:
    rec = await alice.create(new_task())
    rec = await alice.transition(rec.id, S.SPAWNING, expected_version=0)
    rec = await alice.transition(rec.id, S.RUNNING, expected_version=1)
    rec = await alice.transition(rec.id, S.FAILED, expected_version=2,
                                 update={"failure_context": {"reason": "agent_auth"}})  # fmt: skip
    rec = await alice.transition(rec.id, S.ABANDONED, expected_version=3)
    rows = await su.fetch("SELECT event_type, dedup_key, payload::text AS p FROM fleet_outbox "
                          "ORDER BY created_at")  # fmt: skip
    assert [r["event_type"] for r in rows] == [
        "task.spawning", "task.running", "task.failed", "task.abandoned"]  # fmt: skip
    assert rows[0]["dedup_key"] == f"{rec.id}:spawning:1"
    assert rows[-1]["dedup_key"] == f"{rec.id}:abandoned"  # INV-018's key for terminal ones
    assert '"failure_class": "agent_auth"' in rows[2]["p"]
    assert '"from_status": "running"' in rows[2]["p"]


def test_default_filter_is_what_needs_the_operator() -> None:
    assert wanted("task.merged", {}, None) and wanted("task.ready", {}, None)
    assert wanted("task.rejected", {}, None) and wanted("monitor.unhealthy", {}, None)
    assert not wanted("task.running", {}, None) and not wanted("task.spawning", {}, None)
    # a failure the retry will handle is not news; a configuration failure is
    assert not wanted("task.failed", {"failure_class": "agent_exited"}, None)
    assert wanted("task.failed", {"failure_class": "agent_not_installed"}, None)
    assert wanted("task.running", {}, ["task.running"])
    assert not wanted("task.merged", {}, ["task.running"])
    assert set(EVENT_TYPES) >= {"task.stalled", "task.paused", "spawn.admitted"}


def test_message_of_an_outbox_row() -> None:
    row = {"id": "x", "dedup_key": "t1:merged", "event_type": "task.merged",
           "payload": {"task_id": "t1", "from_status": "ready", "to_status": "merged",
                       "pr_number": 7, "branch": "fleet/a", "description": "fix it"}}  # fmt: skip
    msg = message(row, "alice")
    assert msg.line() == "[FLEET] task.merged | t1 | ready → merged"
    assert msg.pr == "#7" and msg.kind == "good" and msg.title == "Merged: fix it"


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)


async def test_bus_and_monitor_events_are_queued_once(db: Database, su: asyncpg.Connection) -> None:
    bus = EventBus()
    listeners: list[object] = []
    q = EventQueuer(db, "host-a", unhealthy_after=3)
    q.attach(bus, listeners)
    tid = "0b5e0ad8-0000-4000-8000-000000000002"
    for _ in range(2):  # the same stall reported twice is one event
        await bus.emit(EventType.STALLED, operator_id="alice", task_id=tid, minutes=31,
                       commit="abc")  # fmt: skip
    await bus.emit(EventType.PAUSED, operator_id="alice", task_id=tid, until="2026-12-01T00:00")
    for errors in ([], ["boom"], ["boom"], ["boom"], ["boom"], [], ["x"]):
        q.cycle_done(Report(errors))
    await q.detach()
    rows = await su.fetch("SELECT operator_id, event_type, dedup_key FROM fleet_outbox "
                          "ORDER BY event_type")  # fmt: skip
    assert [(r["operator_id"], r["event_type"]) for r in rows] == [
        (ALL_SOVEREIGNS, "monitor.unhealthy"), ("alice", "task.paused"),
        ("alice", "task.stalled")]  # fmt: skip
    assert listeners == []


async def test_a_queued_spawn_admitted_is_an_event(db: Database, su: asyncpg.Connection) -> None:
    from fleet_core.governor import Governor

    gov = Governor(db, bus=EventBus())
    await su.execute(
        "INSERT INTO fleet_spawn_queue (operator_id, tier, request) VALUES ('alice', 'builder', "
        "'{}')"
    )
    taken = await gov.take_queued("alice", lambda entry: new_task())
    assert taken is not None
    _, rec = taken
    await wait_for(lambda: _has(su, f"{rec.id}:admitted"), timeout=5, what="the event")


async def _has(su: asyncpg.Connection, key: str) -> bool:
    return bool(await su.fetchval("SELECT 1 FROM fleet_outbox WHERE dedup_key = $1", key))
