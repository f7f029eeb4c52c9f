"""/api/fleet/notifications over real HTTP: channel settings (secrets in, never out), a test
message to a fake Discord, status and redrive, bad input named, operators kept apart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from conftest import Pg
from fake_chat import FakeChat
from fleet_core.models import Tier
from notify_support import add_event
from test_api_access import serving

BASE = "/api/fleet/notifications"


async def test_channels_test_status_redrive(pg: Pg, su: Any, tmp_path: Path) -> None:
    fake = FakeChat("discord").start()
    try:
        async with serving(pg, tmp_path, "notify-api") as s:
            alice = await s.headers("alice", Tier.BUILDER)
            bob = await s.headers("bob", Tier.BUILDER)
            url = f"{fake.url}/api/webhooks/3/hidden-part"
            r = await s.client.put(f"{BASE}/channels/discord", headers=alice,
                                   json={"webhook_url": url, "events": ["task.merged"]})  # fmt: skip
            assert r.status_code == 200, r.text
            assert "hidden-part" not in r.text and r.json()["configured"]
            r = await s.client.get(f"{BASE}/channels", headers=alice)
            assert [c["channel"] for c in r.json()] == ["discord"]
            assert "hidden-part" not in r.text
            assert (await s.client.get(f"{BASE}/channels", headers=bob)).json() == []
            r = await s.client.post(f"{BASE}/test", headers=alice, json={"channel": "discord"})
            assert r.status_code == 200, r.text
            assert r.json()["discord"]["ok"] is True
            assert len(fake.seen) == 1 and fake.seen[0].event_id.startswith("test:")
            r = await s.client.post(f"{BASE}/test", headers=bob, json={})
            assert r.status_code == 404
            # bad input: named, nothing changed
            for body, field in (({"webhook_url": "http://example.com/x"}, "webhook_url"),
                                ({"bot_token": "1:" + "a" * 30}, "bot_token"),
                                ({"events": ["task.nope"]}, "events")):  # fmt: skip
                r = await s.client.put(f"{BASE}/channels/discord", headers=alice, json=body)
                assert r.status_code == 400, r.text
                assert r.json()["field"].split(".")[0] == field
            r = await s.client.put(f"{BASE}/channels/pager", headers=alice, json={})
            assert r.status_code == 404  # no such channel: only discord, telegram, desktop
            r = await s.client.put(f"{BASE}/channels/telegram", headers=alice,
                                   json={"chat_id": "-5"})  # fmt: skip
            assert r.status_code == 404 and "bot_token" in r.json()["message"]
            [c] = (await s.client.get(f"{BASE}/channels", headers=alice)).json()
            assert c["events"] == ["task.merged"]
            # status and redrive of a dead-lettered delivery
            await add_event(su, "api:merged")
            oid = await su.fetchval("SELECT id FROM fleet_outbox")
            await su.execute("UPDATE fleet_outbox SET processed_at = now(), dead_at = now()")
            await su.execute(
                "INSERT INTO fleet_notifications (outbox_id, operator_id, channel, event_type, "
                "payload, attempts, dead_at) VALUES ($1, 'alice', 'discord', 'task.merged', "
                "'{}', 8, now())", oid)  # fmt: skip
            st = (await s.client.get(BASE, headers=alice)).json()
            assert len(st["dead_letters"]) == 1
            assert (await s.client.get(BASE, headers=bob)).json()["dead_letters"] == []
            r = await s.client.post(f"{BASE}/redrive", headers=bob, json={})
            assert r.json() == {"redriven": 0}
            r = await s.client.post(f"{BASE}/redrive", headers=alice, json={"id": "api:"})
            assert r.json() == {"redriven": 1}
            r = await s.client.delete(f"{BASE}/channels/discord", headers=alice)
            assert r.status_code == 200
            r = await s.client.delete(f"{BASE}/channels/discord", headers=alice)
            assert r.status_code == 404
    finally:
        fake.stop()
