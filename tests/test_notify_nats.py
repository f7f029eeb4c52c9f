"""NATS JetStream with a private nats-server (its own port and store dir, never the shared
service on 4222): every transition published once, in order per task, with its dedup key as
Nats-Msg-Id and the operator in a header; NATS stopped mid-run loses nothing; `fleet events
tail` prints an operator's own events."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import nats
import pytest

from conftest import Pg, free_port, new_task
from fleet_core.db.database import Database
from fleet_core.lifecycle import TaskStatus as S
from fleet_core.notify.service import NotifyService
from fleet_core.registry import TaskRegistry
from notify_support import notify_settings, secret_store, wait_for

NATS_SERVER = "/usr/sbin/nats-server"
pytestmark = pytest.mark.skipif(not os.path.exists(NATS_SERVER), reason="no nats-server")


class NatsServer:
    def __init__(self, store: Path) -> None:
        self.port = free_port()
        self.store = store
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None:
                raise RuntimeError("nats-server exited")
            import time

            time.sleep(0.05)
        raise RuntimeError("nats-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


@pytest.fixture
def natsd(tmp_path: Path) -> Iterator[NatsServer]:
    server = NatsServer(tmp_path / "jetstream")
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def service(pg: Pg, db: Database, natsd: NatsServer) -> AsyncIterator[NotifyService]:
    settings = notify_settings(pg.settings.data_dir, nats_url=natsd.url, nats_stream="FLEETT",
                               notify_poll_seconds=0.3)  # fmt: skip
    svc = NotifyService(settings, db, secret_store(db))
    await svc.start()
    yield svc
    await svc.stop()


async def stream_messages(url: str, stream: str = "FLEETT") -> list[nats.aio.msg.Msg]:
    nc = await nats.connect(url)
    try:
        js = nc.jetstream()
        info = await js.stream_info(stream)
        sub = await js.pull_subscribe("fleet.>", stream=stream)
        out = []
        while len(out) < info.state.messages:
            out += await sub.fetch(info.state.messages - len(out), timeout=5)
        return out
    finally:
        await nc.close()


async def run_task(reg: TaskRegistry, n: int) -> list[str]:
    rec = await reg.create(new_task(branch=f"fleet/nats-{n}"))
    path = [S.SPAWNING, S.RUNNING, S.PR_CREATED, S.REVIEWING, S.READY, S.MERGED]
    for v, to in enumerate(path):
        rec = await reg.transition(rec.id, to, expected_version=v)
    return [str(rec.id)]


async def _published(su: asyncpg.Connection) -> bool:
    return not await su.fetchval("SELECT count(*) FROM fleet_outbox WHERE published_at IS NULL")


async def test_every_transition_once_in_order_per_task(
    service: NotifyService, natsd: NatsServer, alice: TaskRegistry, su: asyncpg.Connection
) -> None:
    ids = [tid for n in range(3) for tid in await run_task(alice, n)]
    await wait_for(lambda: _published(su), what="every event published")
    msgs = await stream_messages(natsd.url)
    assert len(msgs) == 18
    by_task: dict[str, list[str]] = {}
    for m in msgs:
        doc = json.loads(m.data)
        assert m.headers["Nats-Msg-Id"] == doc["id"]
        assert m.headers["Fleet-Operator"] == "alice" == doc["operator_id"]
        assert m.subject == f"fleet.{doc['event']}"
        by_task.setdefault(doc["data"]["task_id"], []).append(doc["data"]["to_status"])
    assert set(by_task) == set(ids)
    for seq in by_task.values():
        assert seq == ["spawning", "running", "pr_created", "reviewing", "ready", "merged"]


async def test_stopping_publishes_what_is_waiting_first(
    pg: Pg, db: Database, natsd: NatsServer, alice: TaskRegistry, su: asyncpg.Connection
) -> None:
    """An engine that stops while its worker is publishing lets that round finish and
    publishes the rest before it goes (a second drain beside the loop's used to find the
    pump's lock held, publish nothing, and the loop was cancelled mid-batch)."""
    settings = notify_settings(pg.settings.data_dir, nats_url=natsd.url, nats_stream="FLEETT",
                               notify_poll_seconds=0.3)  # fmt: skip
    svc = NotifyService(settings, db, secret_store(db))
    await svc.start()
    try:
        for n in range(60):  # 360 events: more than one pump batch
            await run_task(alice, n)

        async def some_published() -> bool:
            return bool(await su.fetchval(
                "SELECT count(*) FROM fleet_outbox WHERE published_at IS NOT NULL"))  # fmt: skip

        await wait_for(some_published, what="the pump to start")
    finally:
        await svc.stop(drain_s=60)
    assert await _published(su)
    msgs = await stream_messages(natsd.url)
    assert len(msgs) == 360


async def test_nats_stopped_mid_run_loses_nothing(
    service: NotifyService, natsd: NatsServer, alice: TaskRegistry, su: asyncpg.Connection
) -> None:
    await run_task(alice, 0)
    await wait_for(lambda: _published(su), what="the first task's events")
    natsd.stop()
    await run_task(alice, 1)
    assert service.nats is not None

    async def failed() -> bool:
        return service.nats is not None and service.nats.last_error is not None

    await wait_for(failed, what="the pump to meet the stopped server")
    assert service.health()["nats"] == "error"
    assert await su.fetchval("SELECT count(*) FROM fleet_outbox WHERE published_at IS NULL") == 6
    natsd.start()  # same port, same store
    await wait_for(lambda: _published(su), what="the waiting events after NATS came back")
    msgs = await stream_messages(natsd.url)
    ids = [m.headers["Nats-Msg-Id"] for m in msgs]
    assert len(ids) == len(set(ids)) == 12
    assert service.health()["nats"] == "ok" and service.health()["worker"] == "running"


def test_events_tail_prints_the_operators_own(pg: Pg, natsd: NatsServer, su: object) -> None:
    env = {**os.environ, "FLEET_OPERATOR": "alice", "FLEET_NATS_URL": natsd.url,
           "FLEET_NATS_STREAM": "FLEETT"}  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "fleet_core", "events", "tail", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)  # fmt: skip
    try:
        assert proc.stderr is not None and "following" in proc.stderr.readline()

        async def publish() -> None:
            nc = await nats.connect(natsd.url)
            js = nc.jetstream()
            for op, key in (("bob", "b1"), ("alice", "a1"), ("alice.x", "ax")):
                doc = {"id": key, "event": "task.merged", "operator_id": op, "data": {}}
                await js.publish("fleet.task.merged", json.dumps(doc).encode(),
                                 headers={"Nats-Msg-Id": key, "Fleet-Operator": op})  # fmt: skip
            await nc.close()

        asyncio.run(publish())
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert json.loads(line)["id"] == "a1"
    finally:
        proc.terminate()
        proc.wait(30)
    rest = proc.stdout.read() if proc.stdout else ""
    assert rest == ""  # bob's and alice.x's were not printed


async def test_a_demo_runs_transitions_reach_jetstream_once_in_order(
    pg: Pg, natsd: NatsServer, su: asyncpg.Connection
) -> None:
    from conftest import fleet
    from test_cli import tmux_socket

    try:
        result = await asyncio.to_thread(fleet, "demo", "--headless", FLEET_NATS_URL=natsd.url,
                                         FLEET_NATS_STREAM="FLEETT")  # fmt: skip
    finally:
        subprocess.run(["tmux", "-L", tmux_socket(), "kill-server"], capture_output=True)
    assert result.returncode == 0, result.stderr
    rows = await su.fetch("SELECT dedup_key, event_type, payload ->> 'task_id' AS task, "
                          "(payload ->> 'version')::int AS v, published_at FROM fleet_outbox "
                          "WHERE event_type LIKE 'task.%' ORDER BY created_at")  # fmt: skip
    assert len(rows) > 30 and all(r["published_at"] is not None for r in rows)
    msgs = await stream_messages(natsd.url)
    ids = [m.headers["Nats-Msg-Id"] for m in msgs]
    assert len(ids) == len(set(ids))  # once
    assert {r["dedup_key"] for r in rows} <= set(ids)
    by_task: dict[str, list[str]] = {}
    for m in msgs:
        doc = json.loads(m.data)
        if doc["event"].startswith("task."):
            by_task.setdefault(doc["data"]["task_id"], []).append(doc["id"])
    for task, seq in by_task.items():  # in order: the order of the task's transitions
        expected = [r["dedup_key"] for r in rows if r["task"] == task]
        assert seq == expected, task
