"""An agent's end, at once: the launcher wakes the engine, whose monitor judges the task
before its next cycle; attach refuses an ended agent; finished sessions go once their output
is in the log file. Real PostgreSQL, git, tmux, the launcher and the demo agent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from conftest import eventually, fleet, holds
from fleet_core.conductor import Actor, Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database
from fleet_core.demo import make_sample
from fleet_core.errors import NoSessionError
from fleet_core.events import EventType, FleetEvent
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import SpawnRequest, TaskRecord, Tier
from fleet_core.monitor import CycleReport, Monitor, MonitorConfig
from fleet_core.runtime import wake
from fleet_core.runtime.launch import WAKE_SOCKET
from fleet_core.runtime.paths import RuntimePaths

ACTOR = Actor("alice", Tier.SOVEREIGN)
# The periodic cycle every 300 s: within a test, only the first cycle (at start) runs, so a
# task that moves on after it was moved by a wake pass.
SLOW = MonitorConfig(interval_s=300.0, deadline_s=60.0)


@pytest.fixture
async def engine(tmp_path: Path, db: Database) -> AsyncIterator[Callable[..., Any]]:
    made: list[tuple[Conductor, Monitor]] = []

    def build(config: MonitorConfig = SLOW) -> tuple[Conductor, Monitor]:
        settings = Settings(
            data_dir=tmp_path / "data", host_id="test-host",
            secrets={"FLEET_DEMO_DELAY": "0"}, kill_grace_seconds=0.5,
            retry_base_seconds=600, retry_max_seconds=600,
        )  # fmt: skip
        c = Conductor.from_settings(settings, db)
        made.append((c, Monitor(c, config)))
        return made[-1]

    try:
        yield build
    finally:
        for c, m in made:
            await m.stop()
            await c.stop_engine()
        if made:
            await made[0][0].runtime.tmux.kill_server()


async def spawn(c: Conductor, repo: Path, description: str) -> TaskRecord:
    request = SpawnRequest.model_validate({
        "description": description, "repository": str(repo), "task_type": "feature",
        "agent_type": "demo", "timeout_minutes": 5,
    })  # fmt: skip
    out = await c.spawn(ACTOR, request)
    assert out.task is not None
    return out.task


async def test_an_agent_that_exits_is_failed_before_the_next_cycle(engine, sample: Path) -> None:
    """The order of events: the monitor's first cycle, the spawn, the agent's end, the task
    failed, with no cycle in between (the next is 300 s away); then its session is gone
    and its log still reads."""
    c, m = engine()
    order: list[str] = []
    m.on_cycle.append(lambda report: order.append("cycle"))

    def moved(ev: FleetEvent) -> None:
        order.append(f"{ev.data['from']}->{ev.data['to']}")

    c.bus.subscribe(EventType.STATUS_CHANGED, moved)
    await m.start()
    assert m.ends.listener.listening
    await eventually(lambda: holds(m.cycles == 1))
    rec = await spawn(c, sample, "Break it [demo:fail]")
    await eventually(lambda: holds("running->failed" in order and m.ends.passes >= 1))
    assert order == ["cycle", "proposed->spawning", "spawning->running", "running->failed"]
    assert m.cycles == 1  # failed by the wake pass, not by a cycle
    failed = await c.registry(ACTOR).get(rec.id)
    assert failed.status is TaskStatus.FAILED
    ctx = failed.failure_context or {}
    assert ctx["exit_code"] == 1
    # The agent's last words were in its log before it was judged (the wake waits for them).
    assert "fleet: agent exited with status 1" in (ctx.get("log_tail") or "")
    # Its dead session went once the output was in the log file; the log reads on.
    assert await c.runtime.tmux.pane(f"fleet-{rec.id}") is None
    assert "exited with status 1" in await c.logs(ACTOR, str(rec.id))


async def test_an_agent_that_ends_well_moves_on_before_the_next_cycle(engine, sample: Path) -> None:
    c, m = engine()
    await m.start()
    await eventually(lambda: holds(m.cycles == 1))
    rec = await spawn(c, sample, "Add a multiply function")

    async def moved_on() -> bool:
        await c.forges.local.wait_idle()
        return (await c.registry(ACTOR).get(rec.id)).status is not TaskStatus.RUNNING

    await eventually(moved_on)
    now = await c.registry(ACTOR).get(rec.id)
    assert now.status in (TaskStatus.PR_CREATED, TaskStatus.READY), now.failure_context
    assert now.pr_number == 1
    assert m.cycles == 1


async def test_attach_refuses_an_ended_agent_with_its_state_and_log(engine, sample: Path) -> None:
    c, m = engine()  # no monitor running: the task stays `running` after its agent's end
    rec = await spawn(c, sample, "Break it [demo:fail]")
    await eventually(lambda: c.runtime.exit_status(rec.id))
    with pytest.raises(NoSessionError) as refused:
        await c.attach_command(ACTOR, str(rec.id))
    text = str(refused.value)
    assert f"task {rec.short_id}: nothing to attach to, its agent has ended (exit 1)" in text
    assert "the task is running" in text
    assert "fleet: agent exited with status 1" in text.splitlines()[-1]
    report = await m.cycle()  # judged, then its session removed at the next sweep
    assert report is not None and report.errors == []
    assert (await c.registry(ACTOR).get(rec.id)).status is TaskStatus.FAILED
    await m.cycle()
    assert await c.runtime.tmux.pane(f"fleet-{rec.id}") is None
    with pytest.raises(NoSessionError) as gone:
        await c.attach_command(ACTOR, str(rec.id))
    assert "its agent's session is gone; the task has failed" in str(gone.value)
    assert "fleet: agent exited with status 1" in str(gone.value)


async def test_attach_to_a_live_agent_is_the_tmux_command(engine, sample: Path) -> None:
    c, _m = engine()
    rec = await spawn(c, sample, "Wait [demo:hang]")
    cmd = await c.attach_command(ACTOR, str(rec.id))
    assert cmd[-2:] == ["-t", f"=fleet-{rec.id}"]


async def test_the_sweep_keeps_running_untracked_and_unlogged_sessions(
    engine, sample: Path
) -> None:
    c, m = engine()
    hang = await spawn(c, sample, "Wait [demo:hang]")
    done = await spawn(c, sample, "Break it [demo:fail]")

    async def pane_dead() -> bool:
        pane = await c.runtime.tmux.pane(f"fleet-{done.id}")
        return pane is not None and pane.dead

    await eventually(pane_dead)  # the launcher has ended
    socket_name = c.runtime.paths.tmux_socket
    untracked = uuid.uuid4()  # a dead session with no task row: never touched
    subprocess.run(["tmux", "-L", socket_name, "new-session", "-d", "-s", f"fleet-{untracked}",
                    "true"], check=True)  # fmt: skip
    for _ in range(3):
        report = await m.cycle()
        assert report is not None and report.errors == []
    assert (await c.registry(ACTOR).get(done.id)).status is TaskStatus.FAILED
    panes = await c.runtime.task_panes()
    assert done.id not in panes  # ended, output kept: gone
    assert hang.id in panes and not panes[hang.id].dead  # still at work
    assert untracked in panes and panes[untracked].dead


async def test_a_wake_for_a_live_or_unknown_task_changes_nothing(engine, sample: Path) -> None:
    c, m = engine()
    rec = await spawn(c, sample, "Wait [demo:hang]")
    report = await m.ends.wake_pass({rec.id, uuid.uuid4()})
    assert isinstance(report, CycleReport) and report.errors == [] and report.checked == 0
    assert (await c.registry(ACTOR).get(rec.id)).status is TaskStatus.RUNNING
    assert await c.runtime.is_alive(rec.id)


async def test_a_wake_before_the_spawn_is_recorded_is_tried_again(
    engine, sample: Path, su: asyncpg.Connection
) -> None:
    """An agent can end before its spawn has moved the task to running: the wake is tried
    again until it is, and the task is judged then, still before the next cycle."""
    c, m = engine()
    await m.start()
    await eventually(lambda: holds(m.cycles == 1))
    tid = await su.fetchval(
        "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description,"
        " branch, repository, status) VALUES ('alice','demo','demo','docs','d','fleet/early',"
        " $1, 'spawning') RETURNING id",
        str(sample),
    )  # fmt: skip
    assert wake.send(c.runtime.paths.runs, tid)
    await eventually(lambda: holds(m.ends.passes >= 2))  # seen spawning, and again
    assert (await c.registry(ACTOR).get(tid)).status is TaskStatus.SPAWNING
    await su.execute(
        "UPDATE fleet_tasks SET status = 'running', host_id = 'test-host', spawned_at = now(),"
        " tmux_session = 'fleet-' || id::text, version = version + 1 WHERE id = $1",
        tid,
    )  # fmt: skip

    async def failed() -> bool:
        return (await c.registry(ACTOR).get(tid)).status is TaskStatus.FAILED

    await eventually(failed)  # no session, no exit record: it ended
    assert m.cycles == 1


async def test_the_cli_alone_sees_an_agent_fail_before_the_engine_cycles_again(
    su: asyncpg.Connection, tmp_path: Path
) -> None:
    """Issue 16: the CLI, the background engine (its cycle every 300 s: the first at its
    start, before the spawn; the next after the test's bounds) and an agent that fails: the
    task is failed, by the engine's wake pass (its log says so), its session gone."""
    data = Path(os.environ["FLEET_DATA_DIR"])
    env = {"FLEET_ENGINE_AUTOSTART": "true", "FLEET_MONITOR_INTERVAL_SECONDS": "300",
           "FLEET_SECRETS": '{"FLEET_DEMO_DELAY": "0"}', "FLEET_GH": "/nonexistent/gh",
           "FLEET_HOST_ID": "wake-host"}  # fmt: skip
    try:
        log = data / "logs" / "fleet.log"
        first = "monitor: first cycle done"
        before = log.read_text().count(first) if log.exists() else 0
        started = fleet("engine", "start", "--json", **env)
        assert started.returncode == 0, started.stderr

        async def cycled() -> bool:  # the spawn comes after the engine's one cycle in the test
            return log.read_text().count(first) > before

        await eventually(cycled, timeout=60)
        sample = make_sample(tmp_path / "demo")
        args = ["spawn", "--repo", str(sample), "--type", "feature", "--agent", "demo", "-q"]
        out = fleet(*args, "Break it [demo:fail]", **env)
        assert out.returncode == 0, out.stderr
        task_id = out.stdout.strip()

        async def failed() -> bool:
            status = "SELECT status FROM fleet_tasks WHERE id::text LIKE $1"
            return await su.fetchval(status, task_id + "%") == "failed"

        await eventually(failed, timeout=60)  # 60 s < the 300 s to the engine's next cycle
        line = f"agent ended: task {task_id}"

        async def said() -> bool:  # written just after the move the query above saw
            lines = log.read_text().splitlines()
            return any(line in ln and "is failed at once" in ln for ln in lines)

        await eventually(said, timeout=30)
        shown = fleet("show", task_id, "--json", **env)
        assert json.loads(shown.stdout)["failure_context"]["exit_code"] == 1
        sessions = subprocess.run(
            ["tmux", "-L", RuntimePaths.under(data).tmux_socket, "list-sessions", "-F",
             "#{session_name}"], capture_output=True, text=True,
        ).stdout  # fmt: skip
        assert f"fleet-{task_id}" not in sessions  # removed: its output is in the log file
    finally:
        fleet("engine", "stop", **env)
        subprocess.run(["tmux", "-L", RuntimePaths.under(data).tmux_socket, "kill-server"],
                       capture_output=True)  # fmt: skip


# -- the wake socket ---------------------------------------------------------------------------


async def test_the_listener_takes_wakes_and_ignores_anything_else(tmp_path: Path) -> None:
    runs = tmp_path / ("deep-" * 20) / "run"  # past sun_path's 108 bytes
    assert len(str(runs / WAKE_SOCKET)) > 108
    got: list[uuid.UUID] = []
    listener = wake.WakeListener(runs, got.append)
    assert listener.start()
    try:
        assert (os.stat(runs / WAKE_SOCKET).st_mode & 0o777) == 0o600
        tid = uuid.uuid4()
        for junk in (b"", b"ended not-a-uuid", b"\xff\xfe", b"started " + str(tid).encode()):
            assert _send_raw(runs, junk)
        assert wake.send(runs, tid)
        await eventually(lambda: holds(got == [tid]))
        assert listener.received == 1
    finally:
        listener.close()
    assert not (runs / WAKE_SOCKET).exists()
    assert not wake.send(runs, uuid.uuid4())  # nobody listens: the sender does not fail


async def test_one_listener_per_run_area_and_a_stale_socket_is_replaced(tmp_path: Path) -> None:
    runs = tmp_path / "run"
    first = wake.WakeListener(runs, lambda _t: None)
    second = wake.WakeListener(runs, lambda _t: None)
    assert first.start()
    try:
        assert not second.start() and not second.listening  # the first one listens
    finally:
        first.close()
    # A socket file left by an engine that died (bound, then its process gone).
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    stale.bind(str(runs / WAKE_SOCKET))
    stale.close()
    assert (runs / WAKE_SOCKET).exists()
    got: list[uuid.UUID] = []
    third = wake.WakeListener(runs, got.append)
    assert third.start()
    try:
        tid = uuid.uuid4()
        assert wake.send(runs, tid)
        await eventually(lambda: holds(got == [tid]))
    finally:
        third.close()
    second.close()  # never bound: removes nothing


def _send_raw(runs: Path, data: bytes) -> bool:
    with (
        wake._short(runs / WAKE_SOCKET) as name,
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
    ):
        sock.sendto(data, name)
    return True
