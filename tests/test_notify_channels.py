"""The channels' wire formats, Retry-After, settings validation and encryption, and the
migrations that move the plaintext webhook URL and bot token into encrypted storage."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from conftest import Pg
from fleet_core.db.bootstrap import OWNER_ROLE
from fleet_core.db.database import Database
from fleet_core.db.migrate import Migrator, discover
from fleet_core.errors import BadInputError
from fleet_core.notify.channels import (
    MARKDOWN_V2_RESERVED,
    DesktopChannel,
    DiscordChannel,
    Message,
    TelegramChannel,
    escape_markdown_v2,
    parse_retry_after,
)
from fleet_core.notify.settings import ChannelStore, validate_webhook
from notify_support import secret_store

MSG = Message(
    event_id="3f2a:merged", event_type="task.merged", operator_id="alice",
    task_id="3f2a0000-0000-4000-8000-000000000000", title="Merged: fix (the) bug!",
    summary="ready → merged: PR #12 [ok]", kind="good", branch="fleet/fix-1.2_x", pr="#12",
)  # fmt: skip


def unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def test_markdown_v2_escapes_every_reserved_character() -> None:
    every = "_*[]()~`>#+-=|{}.!\\"
    assert set(every) == set(MARKDOWN_V2_RESERVED)
    text = f"a{every}b é 1.5"
    out = escape_markdown_v2(text)
    assert out == "a" + "".join("\\" + c for c in every) + "b é 1\\.5"
    assert unescape(out) == text
    # nothing reserved is left bare: each reserved character follows an odd run of backslashes
    for m in re.finditer(r"(\\*)([_*\[\]()~`>#+\-=|{}.!])", out):
        assert len(m.group(1)) % 2 == 1, out


def test_telegram_text_keeps_only_its_own_markup_unescaped() -> None:
    text = TelegramChannel.text(MSG)
    lines = text.split("\n")
    assert lines[0] == "*Merged: fix \\(the\\) bug\\!*"
    assert lines[1] == "ready → merged: PR \\#12 \\[ok\\]"
    assert "branch: `fleet/fix\\-1\\.2\\_x`" in lines
    assert lines[-1] == "_fleet 3f2a:merged_"


def test_discord_embed() -> None:
    body = DiscordChannel.body(MSG)
    embed = body["embeds"][0]
    assert embed["title"] == MSG.title and embed["color"] == 0x2ECC71
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields == {"Type": "task.merged", "Task": MSG.task_id, "PR": "#12",
                      "Branch": "fleet/fix-1.2_x"}  # fmt: skip
    assert embed["footer"]["text"] == "fleet 3f2a:merged"
    assert body["allowed_mentions"] == {"parse": []}  # a task text never pings anyone
    bad = DiscordChannel.body(Message(**{**MSG.__dict__, "kind": "bad"}))
    assert bad["embeds"][0]["color"] == 0xE74C3C


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


def test_webhook_validation_names_the_field() -> None:
    assert validate_webhook("https://discord.com/api/webhooks/1/x")
    assert validate_webhook("http://127.0.0.1:8080/h")
    for bad in ("ftp://x/y", "http://example.com/h", "https://", "https://a b"):
        with pytest.raises(BadInputError) as err:
            validate_webhook(bad)
        assert err.value.field == "webhook_url"


async def test_settings_are_encrypted_and_bound_to_their_operator(
    db: Database, su: asyncpg.Connection
) -> None:
    store = ChannelStore(db, secret_store(db))
    url = "https://discord.com/api/webhooks/1/very-secret"
    await store.set("alice", "discord", secret=url, events=["task.merged"])
    raw = await su.fetchrow("SELECT * FROM fleet_notify_channels")
    assert b"very-secret" not in bytes(raw["secret_enc"])
    [cfg] = await store.configs("alice")
    assert cfg.secret == url and cfg.events == ["task.merged"]
    assert "secret" not in str((await store.entries("alice"))[0].to_dict())
    assert await store.configs("bob") == []
    # a row copied to another operator does not open
    await su.execute("UPDATE fleet_notify_channels SET operator_id = 'bob'")
    with pytest.raises(Exception, match="does not decrypt"):
        await store.configs("bob")
    with pytest.raises(BadInputError) as err:
        await store.set("alice", "telegram", secret="not-a-token")
    assert err.value.field == "bot_token"
    with pytest.raises(BadInputError) as err:
        await store.set("alice", "telegram", secret="1:" + "a" * 30)
    assert err.value.field == "chat_id"
    assert await store.entries("alice") == []  # bad input changed nothing


@pytest.fixture
async def scratch(pg: Pg) -> AsyncIterator[tuple[str, str]]:
    name = f"fleet_scratch_{uuid.uuid4().hex[:8]}"
    su = await asyncpg.connect(pg.superuser_dsn)
    await su.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}")
    try:
        yield pg.cluster.info.dsn(OWNER_ROLE, name), pg.cluster.info.dsn("fleet_engine", name)
    finally:
        await su.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await su.close()


async def test_expand_copy_contract_moves_plaintext_into_sealed_storage(
    scratch: tuple[str, str],
) -> None:
    owner_dsn, engine_dsn = scratch
    conn = await asyncpg.connect(owner_dsn)
    try:
        await Migrator(conn, [m for m in discover() if m.version <= 11]).migrate()
        await conn.execute(
            "SELECT set_config('app.is_admin', 'true', false); "
            "INSERT INTO fleet_config (operator_id, discord_webhook_url, telegram_bot_token, "
            "telegram_chat_id) VALUES ('alice', 'https://discord.com/api/webhooks/1/s', "
            "'1:" + "t" * 30 + "', '-42'), ('bob', NULL, NULL, NULL)"
        )
        await Migrator(conn).migrate()
        cols = {r["column_name"] for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'fleet_config'")}  # fmt: skip
        assert not cols & {"discord_webhook_url", "telegram_bot_token", "telegram_chat_id"}
        db = await Database.connect(engine_dsn, owner_dsn=owner_dsn, mode="embedded")
        try:
            store = ChannelStore(db, secret_store(db))
            assert await store.configs("alice") == []  # not sealed yet: never sent in the clear
            assert await store.seal_pending() == 2
            assert await store.seal_pending() == 0
            got = {c.channel: c for c in await store.configs("alice")}
        finally:
            await db.close()
        assert got["discord"].secret == "https://discord.com/api/webhooks/1/s"
        assert got["telegram"].secret == "1:" + "t" * 30 and got["telegram"].target == "-42"
        assert await conn.fetchval(
            "SELECT count(*) FROM fleet_notify_channels WHERE secret_plain IS NOT NULL") == 0  # fmt: skip
        # and back down: the columns return (sealed values stay sealed)
        await Migrator(conn).down(len([m for m in discover() if m.version >= 12]))
        assert await conn.fetchval("SELECT count(*) FROM fleet_config WHERE "
                                   "discord_webhook_url IS NOT NULL") == 0  # fmt: skip
    finally:
        await conn.close()


async def test_desktop_runs_notify_send_with_the_message(tmp_path: Path) -> None:
    """A fake `notify-send` (records its argv, fails when told) stands for the real one."""
    record = tmp_path / "argv"
    fake = tmp_path / "notify-send"
    fake.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$@\" > {record}\n"
                    "[ \"$FAIL\" = 1 ] && { echo 'cannot connect to the bus' >&2; exit 1; }\n"
                    "exit 0\n")  # fmt: skip
    fake.chmod(0o755)
    out = await DesktopChannel(str(fake)).send(Message(**{**MSG.__dict__, "kind": "bad"}))
    assert out.ok
    assert record.read_text().splitlines() == [
        "-a", "fleet", "-u", "critical", MSG.title, MSG.summary]  # fmt: skip
    os.environ["FAIL"] = "1"
    try:
        out = await DesktopChannel(str(fake)).send(MSG)
    finally:
        del os.environ["FAIL"]
    assert not out.ok and out.status == 1 and "cannot connect to the bus" in (out.error or "")
    missing = await DesktopChannel(str(tmp_path / "absent")).send(MSG)
    assert not missing.ok and missing.permanent
