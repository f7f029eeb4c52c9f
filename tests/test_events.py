"""The in-process event bus and the compensating saga."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from fleet_core.errors import BadInputError
from fleet_core.events import EventBus, EventType, FleetEvent
from fleet_core.saga import Failure, Saga, SagaError


async def test_handlers_by_type_then_wildcard_and_failures_isolated() -> None:
    bus = EventBus()
    calls: list[str] = []

    def broken(event: FleetEvent) -> None:
        raise RuntimeError("handler bug")

    async def typed(event: FleetEvent) -> None:
        calls.append(f"typed:{event.type}")

    bus.subscribe("*", lambda e: calls.append(f"any:{e.type}"))
    bus.subscribe(EventType.FAILED, broken)
    bus.subscribe(EventType.FAILED, typed)
    bus.sinks.append(lambda e: calls.append(f"sink:{e.type}"))
    tid = uuid.uuid4()
    event = await bus.emit(EventType.FAILED, operator_id="alice", task_id=tid, reason="oom")
    assert calls == ["typed:failed", "any:failed", "sink:failed"]
    assert bus.errors == 1 and bus.published == 1
    doc = json.loads(json.dumps(event.to_dict()))
    assert (doc["type"], doc["task_id"], doc["data"]) == ("failed", str(tid), {"reason": "oom"})
    calls.clear()
    await bus.emit(EventType.SPAWNED)
    assert calls == ["any:spawned", "sink:spawned"]


async def test_unsubscribe_and_unknown_types() -> None:
    bus = EventBus()
    seen: list[FleetEvent] = []
    off = bus.subscribe("cancelled", seen.append)
    await bus.emit(EventType.CANCELLED)
    off()
    off()  # twice is harmless
    await bus.emit(EventType.CANCELLED)
    assert len(seen) == 1
    with pytest.raises(ValueError):
        bus.subscribe("no_such_event", seen.append)


async def test_saga_compensates_in_reverse_and_reports_each() -> None:
    log: list[str] = []

    async def ok(name: str) -> str:
        log.append(f"do {name}")
        return name

    async def undo(result: str, failure: Failure) -> None:
        log.append(f"undo {result} after {failure.step} ({len(failure.compensated)} before)")
        if result == "b":
            raise OSError("disk gone")

    async def boom() -> None:
        raise BadInputError("branch", "exists")

    saga = Saga("test")
    await saga.step("a", lambda: ok("a"), undo)
    await saga.step("b", lambda: ok("b"), undo)
    await saga.step("no-undo", lambda: ok("c"))
    with pytest.raises(SagaError) as err:
        await saga.step("d", boom, undo)
    assert log == [
        "do a", "do b", "do c",
        "undo b after d (0 before)",
        "undo a after d (1 before)",
    ]  # fmt: skip
    assert err.value.step == "d" and err.value.exit_code == 2  # the cause's exit code
    doc = err.value.to_dict()
    assert doc["compensations"] == [
        {"step": "b", "ok": False, "error": "OSError: disk gone"},
        {"step": "a", "ok": True, "error": None},
    ]
    assert doc["cause"] == {"error": "bad_input", "field": "branch", "message": "exists"}


@pytest.mark.parametrize("signal", [asyncio.CancelledError, KeyboardInterrupt])
async def test_saga_compensates_then_reraises_cancellation(signal: type[BaseException]) -> None:
    undone: list[str] = []

    async def ok() -> str:
        return "a"

    async def undo(result: str, failure: Failure) -> None:
        undone.append(f"{result} after {failure.step}: {type(failure.error).__name__}")

    async def interrupted() -> None:
        raise signal()

    saga = Saga("test")
    await saga.step("a", ok, undo)
    with pytest.raises(signal):
        await saga.step("b", interrupted)
    assert undone == [f"a after b: {signal.__name__}"]


async def test_a_cancelled_saga_task_ends_cancelled() -> None:
    undone: list[str] = []
    started = asyncio.Event()

    async def ok() -> str:
        return "a"

    async def undo(result: str, failure: Failure) -> None:
        undone.append(result)

    async def hang() -> None:
        started.set()
        await asyncio.Event().wait()

    async def run() -> None:
        saga = Saga("test")
        await saga.step("a", ok, undo)
        await saga.step("b", hang)

    task = asyncio.create_task(run())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled() and undone == ["a"]
