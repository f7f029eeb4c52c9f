"""`fleet notify ...` as a user runs it: secrets from stdin and never printed, bad input named
and changing nothing, test messages, status and redrive."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import asyncpg
import pytest

from conftest import Pg
from fake_chat import FakeChat
from notify_support import add_event


def fleet(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet_core", *args],
        capture_output=True, text=True, timeout=120, input=stdin,
        env={**os.environ, "FLEET_OPERATOR": "alice", "FLEET_NOTIFY_DESKTOP": "false"},
    )  # fmt: skip


@pytest.fixture
def discord() -> FakeChat:
    fake = FakeChat("discord").start()
    yield fake
    fake.stop()


def test_set_list_test_remove(pg: Pg, su: asyncpg.Connection, discord: FakeChat) -> None:
    url = f"{discord.url}/api/webhooks/5/secret-part"
    out = fleet("notify", "set", "discord", "--events", "task.merged,task.failed", "--json",
                stdin=url + "\n")  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "secret-part" not in out.stdout
    listed = fleet("notify", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "secret-part" not in listed.stdout
    [doc] = json.loads(listed.stdout)
    assert doc["channel"] == "discord" and doc["configured"] and doc["enabled"]
    assert doc["events"] == ["task.merged", "task.failed"]
    sent = fleet("notify", "test", "--channel", "discord", "--json")
    assert sent.returncode == 0, sent.stderr
    assert json.loads(sent.stdout)["discord"]["ok"] is True
    [seen] = discord.seen
    assert seen.path == "/api/webhooks/5/secret-part?wait=true"
    assert seen.event_id.startswith("test:")
    # a broken receiver: the test says so, exit 1
    discord.always = 500
    failed = fleet("notify", "test")
    assert failed.returncode == 1 and "discord: FAILED (HTTP 500" in failed.stdout
    gone = fleet("notify", "remove", "discord")
    assert gone.returncode == 0, gone.stderr
    assert json.loads(fleet("notify", "list", "--json").stdout) == []
    none = fleet("notify", "test", "--channel", "discord")
    assert none.returncode == 3 and none.stderr.count("\n") == 1


@pytest.mark.parametrize(
    ("args", "stdin", "field"),
    [
        (("set", "discord"), "http://example.com/hook\n", "webhook_url"),
        (("set", "discord"), "", "webhook_url"),
        (("set", "telegram", "--chat-id", "-100"), "nope\n", "bot_token"),
        (("set", "telegram"), "12:" + "a" * 30 + "\n", "chat_id"),
        (("set", "desktop", "--events", "task.exploded"), "", "events"),
        (("set", "discord", "--chat-id", "1"), "https://discord.com/api/webhooks/1/x", "chat_id"),
        (("status", "-n", "0"), "", "n"),
    ],
)
def test_bad_input_is_named_and_changes_nothing(
    pg: Pg, su: asyncpg.Connection, args: tuple[str, ...], stdin: str, field: str
) -> None:
    out = fleet("notify", *args, "--json", stdin=stdin)
    assert out.returncode == 2, out.stderr
    err = json.loads(out.stderr)
    assert err["field"] == field
    assert json.loads(fleet("notify", "list", "--json").stdout) == []


async def test_status_and_redrive(pg: Pg, su: asyncpg.Connection) -> None:
    await add_event(su, "d1:merged")
    await add_event(su, "other:merged", operator="bob")
    oid = await su.fetchval("SELECT id FROM fleet_outbox WHERE dedup_key = 'd1:merged'")
    await su.execute(
        "UPDATE fleet_outbox SET processed_at = now(), dead_at = now() WHERE id = $1", oid
    )
    await su.execute(
        "INSERT INTO fleet_notifications (outbox_id, operator_id, channel, event_type, payload, "
        "attempts, last_status, last_error, dead_at) VALUES ($1, 'alice', 'discord', "
        "'task.merged', '{}', 8, 500, 'HTTP 500', now())",
        oid,
    )
    st = fleet("notify", "status", "--json")
    assert st.returncode == 0, st.stderr
    doc = json.loads(st.stdout)
    assert doc["pending"] == 0  # bob's pending event is not alice's
    assert [(d["channel"], d["attempts"], d["last_status"]) for d in doc["dead_letters"]] == [
        ("discord", 8, 500)]  # fmt: skip
    text = fleet("notify", "status")
    assert "dead" in text.stdout and "fleet notify redrive" in text.stdout
    rd = fleet("notify", "redrive", "d1", "--json")
    assert rd.returncode == 0, rd.stderr
    assert json.loads(rd.stdout) == {"redriven": 1}
    row = await su.fetchrow("SELECT * FROM fleet_outbox WHERE id = $1", oid)
    assert row["processed_at"] is None and row["dead_at"] is None
    n = await su.fetchrow("SELECT * FROM fleet_notifications")
    assert n["attempts"] == 0 and n["dead_at"] is None
    assert json.loads(fleet("notify", "status", "--json").stdout)["pending"] == 1
