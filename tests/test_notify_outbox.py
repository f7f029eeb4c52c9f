"""The outbox worker against real PostgreSQL and fake Discord / Telegram servers on loopback:
delivered exactly once per channel or dead-lettered, never dropped; two engines never deliver
one event twice; LISTEN/NOTIFY wakes the worker; INV-018 sees an event nobody delivers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import pytest

from conftest import Pg
from fake_chat import FakeChat
from fleet_core.db.database import Database, Tenant
from fleet_core.invariants import verify_inv018
from fleet_core.notify.service import NotifyService
from fleet_core.notify.settings import ChannelStore
from fleet_core.notify.status import delivery_health, outbox_status, redrive
from notify_support import add_event, notify_settings, secret_store, unsettled, wait_for

TG_TOKEN = "123456:" + "A" * 30


@pytest.fixture
def discord() -> FakeChat:
    fake = FakeChat("discord").start()
    yield fake
    fake.stop()


@pytest.fixture
def telegram() -> FakeChat:
    fake = FakeChat("telegram").start()
    yield fake
    fake.stop()


async def setup_channels(db: Database, operator: str, discord: FakeChat | None,
                         telegram: FakeChat | None) -> None:  # fmt: skip
    store = ChannelStore(db, secret_store(db))
    if discord:
        await store.set(operator, "discord", secret=f"{discord.url}/api/webhooks/1/tok")
    if telegram:
        await store.set(operator, "telegram", secret=TG_TOKEN, target="-1001")


def service(
    db: Database, pg: Pg, telegram: FakeChat | None = None, **extra: object
) -> NotifyService:
    api = telegram.url if telegram else "http://127.0.0.1:9"
    settings = notify_settings(pg.settings.data_dir, telegram_api_url=api, **extra)
    return NotifyService(settings, db, secret_store(db))


async def test_429_and_500_bursts_every_event_delivered_once_per_channel(
    pg: Pg, db: Database, su: asyncpg.Connection, discord: FakeChat, telegram: FakeChat
) -> None:
    discord.script = [429, 500, 500, 500, 429, 500, 502, 503]
    telegram.script = [500, 429, 500, 500, 500, 429, 429, 500]
    await setup_channels(db, "alice", discord, telegram)
    svc = service(db, pg, telegram, notify_max_attempts=20)
    keys = [f"t{i}:merged" for i in range(12)]
    for k in keys:
        await add_event(su, k)
    await svc.start()
    try:
        await wait_for(lambda: _zero(su), what="every event settled")
    finally:
        await svc.stop()
    assert discord.delivered() == {k: 1 for k in keys}
    assert telegram.delivered() == {k: 1 for k in keys}
    # the scripted failures were met and retried, not skipped
    assert sum(1 for s in discord.seen if s.status == 429) == 2
    assert sum(1 for s in telegram.seen if s.status >= 500) == 5
    rows = await su.fetch(
        "SELECT channel, delivered_at, dead_at, attempts FROM fleet_notifications"
    )
    assert len(rows) == 24
    assert all(r["delivered_at"] is not None and r["dead_at"] is None for r in rows)
    assert sum(r["attempts"] for r in rows) == 24 + 8 + 8
    assert all(s.path.startswith("/bot123456:") and s.path.endswith("/sendMessage")
               for s in telegram.seen)  # fmt: skip
    assert all(s.body["parse_mode"] == "MarkdownV2" and s.body["chat_id"] == "-1001"
               for s in telegram.seen)  # fmt: skip
    embed = discord.seen[-1].body["embeds"][0]
    assert embed["color"] == 0x2ECC71 and embed["footer"]["text"].startswith("fleet t")


async def _zero(su: asyncpg.Connection) -> bool:
    return await unsettled(su) == 0


async def test_a_receiver_that_keeps_failing_is_dead_lettered_then_redriven(
    pg: Pg, db: Database, su: asyncpg.Connection, discord: FakeChat, telegram: FakeChat
) -> None:
    discord.always = 500
    await setup_channels(db, "alice", discord, telegram)
    svc = service(db, pg, telegram, notify_max_attempts=3)
    await add_event(su, "k1:abandoned", event="task.abandoned")
    await svc.start()
    try:
        await wait_for(lambda: _zero(su), what="the event settled")
        dead = await su.fetchrow("SELECT * FROM fleet_notifications WHERE channel = 'discord'")
        assert dead["attempts"] == 3 and dead["dead_at"] is not None
        assert dead["last_status"] == 500
        assert telegram.delivered() == {"k1:abandoned": 1}
        event = await su.fetchrow("SELECT * FROM fleet_outbox")
        assert event["dead_at"] is not None and "dead-lettered" in event["error"]
        # not every channel failed: no CLI fallback
        assert (
            await su.fetchval("SELECT count(*) FROM fleet_notifications WHERE channel = 'cli'") == 0
        )
        status = await outbox_status(db, Tenant.operator("alice"))
        assert status["dead_lettered_events"] == 1
        assert [d["channel"] for d in status["dead_letters"]] == ["discord"]
        health = await delivery_health(db, Tenant.operator("alice"))
        assert not health.ok and health.dead == 1
        assert "deliveries failing" in health.line()
        # bob sees none of alice's
        assert (await outbox_status(db, Tenant.operator("bob")))["dead_letters"] == []
        assert await redrive(db, Tenant.operator("bob")) == 0

        discord.always = None
        assert await redrive(db, Tenant.operator("alice"), "k1") == 1
        await wait_for(lambda: _zero(su), what="the redriven event settled")
        await wait_for(lambda: _delivered(su, "discord"), what="the redriven delivery")
    finally:
        await svc.stop()
    assert discord.delivered() == {"k1:abandoned": 1}
    assert telegram.delivered() == {"k1:abandoned": 1}  # not sent again
    assert (await delivery_health(db, Tenant.operator("alice"))).ok


async def _delivered(su: asyncpg.Connection, channel: str) -> bool:
    return bool(await su.fetchval(
        "SELECT delivered_at IS NOT NULL FROM fleet_notifications WHERE channel = $1", channel
    ))  # fmt: skip


async def test_every_channel_dead_falls_back_to_the_cli_line(
    pg: Pg, db: Database, su: asyncpg.Connection, discord: FakeChat,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    discord.always = 404  # a deleted webhook: no retry helps
    await setup_channels(db, "alice", discord, None)
    svc = service(db, pg)
    await add_event(su, "k2:merged", task_id="0b5e0ad8-0000-4000-8000-000000000001")
    with caplog.at_level("WARNING", logger="fleet_core.notify.channels"):
        await svc.start()
        try:
            await wait_for(lambda: _zero(su), what="the event settled")
        finally:
            await svc.stop()
    rows = {r["channel"]: r for r in await su.fetch("SELECT * FROM fleet_notifications")}
    assert rows["discord"]["attempts"] == 1 and rows["discord"]["dead_at"] is not None
    assert rows["cli"]["delivered_at"] is not None
    lines = [r.getMessage() for r in caplog.records]
    assert "[FLEET] task.merged | 0b5e0ad8-0000-4000-8000-000000000001 | ready → merged" in lines


async def test_no_channel_set_up_means_the_cli_line_and_filters_hold(
    pg: Pg, db: Database, su: asyncpg.Connection, discord: FakeChat
) -> None:
    store = ChannelStore(db, secret_store(db))
    await store.set("bob", "discord", secret=f"{discord.url}/api/webhooks/2/t",
                    events=["task.running"])  # fmt: skip
    svc = service(db, pg)
    await add_event(su, "a:merged")  # alice: nothing set up → cli
    await add_event(su, "a:running", event="task.running")  # not in the defaults → nothing
    await add_event(su, "b:merged", operator="bob")  # bob filters it out
    await add_event(su, "b:running", operator="bob", event="task.running")
    await svc.start()
    try:
        await wait_for(lambda: _zero(su), what="every event settled")
    finally:
        await svc.stop()
    got = await su.fetch("SELECT operator_id, channel, event_type FROM fleet_notifications "
                         "ORDER BY operator_id")  # fmt: skip
    assert [(r["operator_id"], r["channel"], r["event_type"]) for r in got] == [
        ("alice", "cli", "task.merged"), ("bob", "discord", "task.running")]  # fmt: skip
    assert discord.delivered() == {"b:running": 1}
    assert await su.fetchval("SELECT count(*) FROM fleet_outbox WHERE processed_at IS NULL") == 0


async def test_two_engines_on_one_database_never_deliver_twice(
    pg: Pg, db: Database, su: asyncpg.Connection, discord: FakeChat
) -> None:
    await setup_channels(db, "alice", discord, None)
    db2 = await Database.connect(pg.engine_dsn, owner_dsn=pg.owner_dsn, mode="embedded")
    one = service(db, pg, host_id="engine-one")
    two = service(db2, pg, host_id="engine-two")
    keys = [f"two{i}:merged" for i in range(60)]
    try:
        await one.start()
        await two.start()
        for k in keys:
            await add_event(su, k)
        await wait_for(lambda: _zero(su), what="every event settled")
    finally:
        await one.stop()
        await two.stop()
        await db2.close()
    assert discord.delivered() == {k: 1 for k in keys}
    assert len(discord.seen) == len(keys)
    # both did work (otherwise the test shows nothing about two engines)
    assert one.worker.stats.processed > 0 and two.worker.stats.processed > 0


async def test_listen_notify_wakes_the_worker_without_polling(
    pg: Pg, db: Database, su: asyncpg.Connection, discord: FakeChat
) -> None:
    await setup_channels(db, "alice", discord, None)
    svc = service(db, pg, notify_poll_seconds=3600)
    await svc.start()
    try:
        assert svc.worker.stats.listening
        await asyncio.sleep(0.2)  # the first pass (nothing to do) is over; it now sleeps an hour
        await add_event(su, "wake:merged")
        await wait_for(lambda: _zero(su), timeout=30, what="delivery after NOTIFY")
    finally:
        await svc.stop()
    assert svc.worker.stats.wakeups >= 1
    assert discord.delivered() == {"wake:merged": 1}


async def test_inv018_reports_an_event_no_worker_delivers(
    pg: Pg, db: Database, su: asyncpg.Connection
) -> None:
    await add_event(su, "late:merged")
    assert await verify_inv018(db) == []
    await su.execute("UPDATE fleet_outbox SET next_attempt_at = now() - interval '1 hour'")
    found = await verify_inv018(db)
    assert len(found) == 1 and "undelivered" in found[0].detail
    svc = service(db, pg)
    await svc.start()
    try:
        await wait_for(lambda: _zero(su), what="the late event delivered")
    finally:
        await svc.stop()
    assert await verify_inv018(db) == []


async def test_a_dead_engines_lease_is_released_at_its_restart(
    pg: Pg, db: Database, su: asyncpg.Connection, discord: FakeChat, tmp_path: Path
) -> None:
    await setup_channels(db, "alice", discord, None)
    await add_event(su, "held:merged")
    # as a killed engine leaves it: claimed by engine-x for another hour
    await su.execute("UPDATE fleet_outbox SET locked_by = 'engine-x', "
                     "locked_until = now() + interval '1 hour'")  # fmt: skip
    other = service(db, pg, host_id="engine-y")
    await other.start()
    await asyncio.sleep(0.5)
    assert await unsettled(su) == 1  # another engine respects the lease
    await other.stop()
    again = service(db, pg, host_id="engine-x")
    await again.start()
    try:
        await wait_for(lambda: _zero(su), what="delivery after the restart")
    finally:
        await again.stop()
    assert discord.delivered() == {"held:merged": 1}
