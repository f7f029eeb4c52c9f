"""An engine SIGKILLed while the receiver holds its request open: after a restart the event
is delivered, and the receiver sees its id at most twice (dedup by id leaves one)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from pathlib import Path

import asyncpg

from conftest import Pg
from fake_chat import FakeChat
from fleet_core.db.database import Database
from fleet_core.notify.settings import ChannelStore
from notify_support import add_event, secret_store, unsettled, wait_for

HERE = Path(__file__).parent


async def start_worker(pg: Pg) -> asyncio.subprocess.Process:
    doc = {"dsn": pg.engine_dsn, "data_dir": str(pg.settings.data_dir), "host_id": "crashy"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(HERE / "notify_worker.py"), json.dumps(doc),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(HERE)},
    )  # fmt: skip
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert line.strip() == b"ready", line
    return proc


async def test_sigkill_mid_delivery_then_restart_delivers(
    pg: Pg, db: Database, su: asyncpg.Connection
) -> None:
    fake = FakeChat("discord", hold=threading.Event()).start()
    try:
        await ChannelStore(db, secret_store(db)).set(
            "alice", "discord", secret=f"{fake.url}/api/webhooks/9/x"
        )
        await add_event(su, "crash:merged")
        first = await start_worker(pg)
        assert await asyncio.to_thread(fake.arrived.wait, 60), "the request never arrived"
        first.send_signal(signal.SIGKILL)
        assert await first.wait() == -signal.SIGKILL
        assert await unsettled(su) == 1  # the kill left it undelivered in the database
        fake.hold.set()  # the receiver answers the cut-off request (nobody reads it)
        second = await start_worker(pg)
        try:
            await wait_for(lambda: _settled(su), what="delivery after the restart")
        finally:
            second.terminate()
            await second.wait()
        ids = fake.ids()
        assert set(ids) == {"crash:merged"}
        assert 1 <= len(ids) <= 2
        row = await su.fetchrow("SELECT * FROM fleet_notifications WHERE channel = 'discord'")
        assert row["delivered_at"] is not None and row["attempts"] == 1
    finally:
        fake.stop()


async def _settled(su: asyncpg.Connection) -> bool:
    return await unsettled(su) == 0
