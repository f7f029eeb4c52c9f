"""The background engine (issue 16 item 1, DESIGN §10): the CLI alone takes a task to `ready`,
the engine stops by itself when idle, `fleet engine` shows and stops it, and a console-like
process that starts while it runs is its client, then takes the role over when it exits."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from conftest import Pg, eventually, fleet, free_port, holds, new_task, pilot_until
from fleet_console.app import FleetApp
from fleet_console.screens.fleet import FleetScreen
from fleet_core.background_run import pending_work
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.demo import make_sample
from fleet_core.engine_lock import EngineLock, current_holder, lock_path, me
from fleet_core.engine_role import served_engine
from fleet_core.errors import ConflictError
from fleet_core.events import EventBus, EventType, FleetEvent
from fleet_core.follower import TaskFollower
from fleet_core.lifecycle import TaskStatus
from fleet_core.registry import TaskRegistry
from fleet_core.runtime.paths import RuntimePaths

DATA = Path(os.environ["FLEET_DATA_DIR"])
ON = {
    "FLEET_ENGINE_AUTOSTART": "true",
    "FLEET_MONITOR_INTERVAL_SECONDS": "0.3",
    "FLEET_SECRETS": '{"FLEET_DEMO_DELAY": "0"}',
    "FLEET_GH": "/nonexistent/gh",
    "FLEET_HOST_ID": "bg-host",
}


def holder_pid(role: str | None = None) -> int | None:
    holder = current_holder(lock_path(DATA, ON["FLEET_HOST_ID"]))
    return holder.pid if holder and role in (None, holder.role) else None


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in _state(pid)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1]
    except (OSError, IndexError):
        return ""


@pytest.fixture
def background() -> Iterator[dict[str, str]]:
    """The environment that lets verbs start the background engine; afterwards whatever engine
    the test started is stopped (and killed if it does not stop) and the agents' tmux server
    removed: no process outlives the test."""
    pids: set[int] = set()
    try:
        yield ON
    finally:
        pid = holder_pid("background")  # never this process (a console of a test)
        if pid and pid != os.getpid():
            pids.add(pid)
        fleet("engine", "stop", **ON)
        for pid in pids:
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        sock = RuntimePaths.under(DATA).tmux_socket
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def engine_status(**env: str) -> dict[str, object]:
    out = fleet("engine", "status", "--json", **env)
    assert out.returncode == 0, out.stderr
    doc: dict[str, object] = json.loads(out.stdout)
    return doc


async def test_the_cli_alone_takes_a_task_to_ready(
    su: asyncpg.Connection, tmp_path: Path, background: dict[str, str]
) -> None:
    assert engine_status(**background)["running"] is False
    sample = make_sample(tmp_path / "demo")  # a bare remote: the local forge, CI = unittest
    args = ["spawn", "--repo", str(sample), "--type", "feature", "--agent", "demo"]
    out = fleet(*args, "Add a multiply function", **background)
    assert out.returncode == 0, out.stderr
    task_id = out.stdout.split()[1].rstrip(":")  # "spawned 1a2b3c4d: running on ..."
    said = [line for line in out.stderr.splitlines() if "background engine" in line]
    assert len(said) == 1 and said[0].startswith("fleet: started the background engine (pid ")

    doc = engine_status(**background)
    assert (doc["running"], doc["role"], doc["host"]) == (True, "background", "bg-host")
    pid = int(str(doc["pid"]))
    assert alive(pid) and pid == holder_pid()
    listed = json.loads(fleet("status", "--json", **background).stdout)["engine"]
    assert (listed["role"], listed["pid"]) == ("background", pid)
    assert not fleet("status", **background).stdout.startswith("NO ENGINE")
    text = fleet("engine", "status", **background).stdout
    assert text.startswith(f"engine: the background engine (pid {pid}, since ")
    assert "it stops after 30 min with no live or pending task" in text

    # A second spawn finds it running: nothing said, no second engine.
    again = fleet(*args, "--json", "Document calc.py [demo:hang]", **background)
    assert again.returncode == 0 and "engine" not in again.stderr, again.stderr
    assert holder_pid() == pid

    async def ready() -> bool:
        found = "SELECT status FROM fleet_tasks WHERE id::text LIKE $1"
        return await su.fetchval(found, task_id + "%") == "ready"

    await eventually(ready, timeout=120)
    row = await su.fetchrow(
        "SELECT pr_number, ci_status FROM fleet_tasks WHERE id::text LIKE $1", task_id + "%"
    )
    assert (row["pr_number"], row["ci_status"]) == (1, "passing")

    stopped = fleet("engine", "stop", **background)
    assert stopped.returncode == 0, stopped.stderr
    assert (
        stopped.stdout.strip() == f"stopped the background engine (pid {pid}); agents keep running"
    )
    await eventually(lambda: holds(not alive(pid)), timeout=30)
    assert engine_status(**background)["running"] is False


async def test_an_idle_engine_stops_by_itself(
    su: asyncpg.Connection, background: dict[str, str]
) -> None:
    env = {**background, "FLEET_ENGINE_IDLE_MINUTES": "0.01"}
    started = fleet("engine", "start", "--json", **env)
    assert started.returncode == 0, started.stderr
    doc = json.loads(started.stdout)
    assert (doc["running"], doc["started"], doc["idle_minutes"]) == (True, True, 0.01)
    pid = int(doc["pid"])
    # No task at all: it stops after 0.6 s, and the log file says why.
    await eventually(lambda: holds(not alive(pid)), timeout=60)
    assert engine_status(**env)["running"] is False
    log = (DATA / "logs" / "fleet.log").read_text()
    assert "background engine: stopping (nothing live or pending for 0.01 min)" in log


def test_start_twice_and_bad_settings(su: asyncpg.Connection, background: dict[str, str]) -> None:
    first = fleet("engine", "start", **background)
    assert first.returncode == 0 and first.stdout.startswith("started the background engine")
    second = fleet("engine", "start", **background)
    assert second.returncode == 0 and second.stdout.startswith("already running: the background")
    bad = fleet("engine", "status", **background, FLEET_ENGINE_IDLE_MINUTES="0")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("fleet: config error: engine_idle_minutes (from FLEET_ENGINE_")


def test_stop_refuses_a_console_that_is_the_engine(background: dict[str, str]) -> None:
    lock = EngineLock(lock_path(DATA, background["FLEET_HOST_ID"]))
    assert lock.acquire(me("console", background["FLEET_HOST_ID"]))
    try:
        out = fleet("engine", "stop", **background)
        assert out.returncode == 5, out.stderr
        assert out.stderr.startswith(f"fleet: the engine here is a console (pid {os.getpid()}")
        assert "quit it there" in out.stderr
        status = engine_status(**background)
        assert (status["role"], status["pid"]) == ("console", os.getpid())
        # A spawn does not start a second engine beside the console (nothing to say).
        started = fleet("engine", "start", **background)
        assert started.stdout.startswith(f"already running: a console (pid {os.getpid()}")
    finally:
        lock.release()
    assert engine_status(**background)["running"] is False


async def test_a_console_is_the_client_then_takes_the_role_over(
    su: asyncpg.Connection, tmp_path: Path, background: dict[str, str]
) -> None:
    started = await asyncio.to_thread(fleet, "engine", "start", "--json", **background)
    pid = int(json.loads(started.stdout)["pid"])
    settings = Settings(host_id=background["FLEET_HOST_ID"], monitor_interval_seconds=0.3,
                        secrets={"FLEET_DEMO_DELAY": "0"}, gh="/nonexistent/gh")  # fmt: skip
    bus = EventBus()
    seen: list[FleetEvent] = []
    bus.subscribe(EventType.STATUS_CHANGED, seen.append)
    tenant = Tenant.operator("alice")
    async with served_engine(settings, "console", tenant=tenant, bus=bus, poll_s=0.1) as engine:
        assert engine.serving.startswith(f"client of the background engine (pid {pid}")
        assert not engine.active and not engine.monitor.health()["running"]
        # A change made by another process reaches this one's bus (LISTEN/NOTIFY or the poll).
        sample = make_sample(tmp_path / "demo")
        args = ["spawn", "--repo", str(sample), "--type", "feature", "--agent", "demo", "-q"]
        out = await asyncio.to_thread(fleet, *args, "Fail at once [demo:fail]", **background)
        assert out.returncode == 0, out.stderr
        task_id = out.stdout.strip()
        await eventually(lambda: holds(any(str(e.task_id) == task_id for e in seen)), 30)
        assert seen[0].data["elsewhere"] is True
        # The background engine goes: this process takes the engine's part.
        stopped = await asyncio.to_thread(fleet, "engine", "stop", **background)
        assert stopped.returncode == 0, stopped.stderr
        await eventually(lambda: holds(engine.active), timeout=30)
        assert engine.serving == "engine (took the role over)"
        assert engine.monitor.health()["running"]
        holder = current_holder(lock_path(DATA, background["FLEET_HOST_ID"]))
        assert holder is not None and (holder.pid, holder.role) == (os.getpid(), "console")
        # Its own monitor moves the task on: the agent failed.
        await eventually(lambda: holds(any(e.data.get("to") == "failed" for e in seen)), 60)
    assert current_holder(lock_path(DATA, background["FLEET_HOST_ID"])) is None


def _reader(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))

    threading.Thread(target=read, daemon=True).start()
    return lines


def _wait_line(lines: queue.Queue[str], start: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=left)
        except queue.Empty:
            break
        if line.startswith(start):
            return line
    raise AssertionError(f"no line starting {start!r} in {timeout} s")


def test_a_server_beside_the_engine_is_its_client_then_the_engine(
    su: asyncpg.Connection, tmp_path: Path, background: dict[str, str]
) -> None:
    started = fleet("engine", "start", "--json", **background)
    pid = int(json.loads(started.stdout)["pid"])
    issued = fleet("token", "issue", "--operator", "alice", "--tier", "builder", **background)
    assert issued.returncode == 0, issued.stderr
    headers = {"Authorization": f"Bearer {issued.stdout.strip()}"}
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "FLEET_OPERATOR": "alice", **background,
           "FLEET_WORKTREE_DIR": str(tmp_path / "worktrees")}  # fmt: skip
    argv = [sys.executable, "-m", "fleet_core", "--headless", "--port", str(port)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip
    try:
        lines = _reader(proc)
        said = _wait_line(lines, "fleet: another process is the engine here")
        assert f"its client of the background engine (pid {pid}, since " in said
        _wait_line(lines, f"fleet: serving {url}")
        health = httpx.get(url + "/healthz", headers=headers, timeout=10).json()
        assert (health["ok"], health["engine"][:39]) == (
            True,
            f"client of the background engine (pid {pid}"[:39],
        )
        assert health["monitor"]["running"] is False  # the engine's monitor is the other one
        assert fleet("engine", "stop", **background).returncode == 0
        _wait_line(lines, "fleet: this server is the engine now")
        doc = engine_status(**background)
        assert (doc["role"], doc["pid"]) == ("headless", proc.pid)
        health = httpx.get(url + "/healthz", headers=headers, timeout=10).json()
        assert (health["ok"], health["engine"]) == (True, "engine (took the role over)")
        assert health["monitor"]["running"] is True
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert engine_status(**background)["running"] is False


async def test_a_console_beside_the_engine_says_so_and_takes_the_role_over(
    pg: Pg, su: asyncpg.Connection, tmp_path: Path, background: dict[str, str]
) -> None:
    started = await asyncio.to_thread(fleet, "engine", "start", "--json", **background)
    pid = int(json.loads(started.stdout)["pid"])
    settings = Settings(data_dir=pg.settings.data_dir, operator="alice",
                        host_id=background["FLEET_HOST_ID"], worktree_dir=tmp_path / "w")  # fmt: skip
    app = FleetApp(settings)  # the console as `fleet` opens it
    async with app.run_test(size=(160, 48)) as pilot:
        screen = app.screen
        assert isinstance(screen, FleetScreen)
        client = f"client of the background engine (pid {pid}"
        await pilot_until(pilot, lambda: client in str(screen.panel.content), "the panel")
        await pilot_until(
            pilot,
            lambda: any(n.title == "another process is the engine" for n in app._notifications),
            "the notice",
        )
        stopped = await asyncio.to_thread(fleet, "engine", "stop", **background)
        assert stopped.returncode == 0, stopped.stderr
        await pilot_until(
            pilot,
            lambda: any("this console is the engine now" in n.message for n in app._notifications),
            "the take-over notice",
        )
        assert app.source is not None and app.source.engine.active
        doc = await asyncio.to_thread(engine_status, **background)
        assert (doc["role"], doc["pid"]) == ("console", os.getpid())
        await pilot_until(pilot, lambda: "running, " in str(screen.panel.content), "the monitor")
    await eventually(lambda: holds(holder_pid() is None), timeout=30)  # quitting releases it


async def test_what_keeps_an_engine_from_idling(db: Database, su: asyncpg.Connection) -> None:
    """Live or pending tasks of this host, and queued spawns; never tasks that wait for the
    operator (ready, a configuration failure) or that another host's engine follows."""
    registry = TaskRegistry(db, Tenant.operator("alice"))
    assert await pending_work(db, "here") == 0

    async def task(status: str, host: str | None = "here", reason: str | None = None) -> None:
        rec = await registry.create(new_task(branch=f"fleet/t-{uuid.uuid4().hex[:8]}"))
        ctx = json.dumps({"reason": reason}) if reason else None
        await su.execute(
            "UPDATE fleet_tasks SET status = $2, host_id = $3, failure_context = $4::jsonb "
            "WHERE id = $1",
            rec.id, status, host, ctx,
        )  # fmt: skip

    for status in ("ready", "merged", "abandoned", "cancelled"):
        await task(status)
    await task("failed", reason="agent_auth")  # only `fleet retry` retries it
    await task("running", host="elsewhere")
    assert await pending_work(db, "here") == 0
    await task("failed", reason="timeout")  # its retry is due later
    assert await pending_work(db, "here") == 1
    await task("pr_created", host=None)
    assert await pending_work(db, "here") == 2
    await su.execute(
        "INSERT INTO fleet_spawn_queue (operator_id, tier, request) VALUES ('alice', 'builder', '{}')"
    )
    assert await pending_work(db, "here") == 3


def test_a_server_that_stops_hands_live_tasks_to_the_background_engine(
    su: asyncpg.Connection, tmp_path: Path, background: dict[str, str]
) -> None:
    port = free_port()
    env = {**os.environ, "FLEET_OPERATOR": "alice", **background}
    argv = [sys.executable, "-m", "fleet_core", "--headless", "--port", str(port)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            text=True)  # fmt: skip
    try:
        lines = _reader(proc)
        _wait_line(lines, f"fleet: serving http://127.0.0.1:{port}")
        assert engine_status(**background)["role"] == "headless"
        sample = make_sample(tmp_path / "demo")
        args = ["spawn", "--repo", str(sample), "--type", "docs", "--agent", "demo"]
        out = fleet(*args, "Wait [demo:hang]", **background)
        assert out.returncode == 0 and "engine" not in out.stderr, out.stderr  # one serves
        proc.send_signal(signal.SIGTERM)
        _wait_line(lines, "fleet: stopped; agents keep running")
        said = _wait_line(lines, "fleet: 1 task(s) still need an engine: started the backgr")
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    doc = engine_status(**background)
    assert doc["role"] == "background" and f"(pid {doc['pid']};" in said


async def test_the_demo_stops_a_background_engine_but_never_a_console(
    su: asyncpg.Connection, background: dict[str, str]
) -> None:
    started = await asyncio.to_thread(fleet, "engine", "start", "--json", **background)
    pid = int(json.loads(started.stdout)["pid"])
    settings = Settings(host_id=background["FLEET_HOST_ID"])
    tenant = Tenant.operator("alice")
    async with served_engine(settings, "demo", tenant=tenant, evict=True) as engine:
        assert engine.active and engine.serving == "engine"
        await eventually(lambda: holds(not alive(pid)), timeout=30)  # it let go, then exits
        holder = current_holder(lock_path(DATA, background["FLEET_HOST_ID"]))
        assert holder is not None and (holder.pid, holder.role) == (os.getpid(), "demo")
    assert holder_pid() is None
    lock = EngineLock(lock_path(DATA, background["FLEET_HOST_ID"]))
    assert lock.acquire(me("console", background["FLEET_HOST_ID"]))
    try:
        with pytest.raises(ConflictError, match=r"a console \(pid \d+, since .*quit it first"):
            async with served_engine(settings, "demo", tenant=tenant, evict=True):
                raise AssertionError("the demo ran beside a console")
    finally:
        lock.release()


async def test_the_follower_hears_changes_made_elsewhere_at_once(
    pg: Pg, db: Database, su: asyncpg.Connection
) -> None:
    """LISTEN/NOTIFY, not the poll (an hour here): another connection's transition reaches the
    bus as a status change; one this process announced itself is not repeated."""
    bus = EventBus()
    seen: list[FleetEvent] = []
    bus.subscribe(EventType.STATUS_CHANGED, seen.append)
    alice = TaskRegistry(db, Tenant.operator("alice"))
    rec = await alice.create(new_task())
    follower = TaskFollower(db, bus, Tenant.operator("alice"), poll_s=3600)
    await follower.start()
    try:
        other = await Database.connect(pg.engine_dsn, owner_dsn=pg.owner_dsn, mode="embedded")
        try:
            moved = await TaskRegistry(other, Tenant.operator("alice")).transition(
                rec.id, TaskStatus.SPAWNING, expected_version=rec.version
            )
            await eventually(lambda: holds(len(seen) == 1), timeout=20)
            event = seen[0]
            assert (event.task_id, event.operator_id) == (rec.id, "alice")
            assert (event.data["from"], event.data["to"], event.data["elsewhere"]) == (
                "proposed", "spawning", True
            )  # fmt: skip
            assert follower.wakeups >= 1
            # This process moves it and says so on its bus: the follower does not repeat it.
            await bus.emit(EventType.STATUS_CHANGED, operator_id="alice", task_id=rec.id,
                           to="running")  # fmt: skip
            await alice.transition(rec.id, TaskStatus.RUNNING, expected_version=moved.version)
            await eventually(lambda: holds(follower.known[rec.id][0] == "running"), timeout=20)
            assert [e.data.get("elsewhere") for e in seen] == [True, None]
        finally:
            await other.close()
    finally:
        await follower.stop()
