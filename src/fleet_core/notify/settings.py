"""Each operator's notification channels (table fleet_notify_channels): the Discord webhook URL
and the Telegram bot token sealed with the master key (SecretStore.seal, associated data
"operator NUL notify.<channel>"), the chat id in the clear, an optional event filter.

Nothing here returns or logs a secret except `configs`, which the outbox worker uses to send.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from fleet_core.auth.secret_store import SecretStore
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import BadInputError, NotFoundError

CHANNELS = ("discord", "telegram", "desktop", "cli")
SECRET_CHANNELS = ("discord", "telegram")
TELEGRAM_TOKEN_RE = re.compile(r"^[0-9]{1,20}:[A-Za-z0-9_-]{20,100}$")
CHAT_ID_RE = re.compile(r"^(-?[0-9]{1,20}|@[A-Za-z][A-Za-z0-9_]{3,63})$")
# What validate_webhook accepts, as a pattern for the API's schema (https, or http to loopback).
WEBHOOK_RE = re.compile(
    r"^(https://[^\s/?#@:\[\]]+(:[0-9]{1,5})?"
    r"|http://(127\.0\.0\.1|localhost|\[::1\])(:[0-9]{1,5})?)(/\S*)?$"
)


class ChannelNotFoundError(NotFoundError):
    """The operator has no such channel set up."""


@dataclass(frozen=True)
class ChannelInfo:
    """A channel's settings without its secret."""

    channel: str
    enabled: bool
    has_secret: bool
    target: str | None
    events: list[str] | None  # None: the defaults
    updated_at: datetime

    def to_dict(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "enabled": self.enabled,
            "configured": self.has_secret or self.channel in ("desktop", "cli"),
            "target": self.target,
            "events": self.events,
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True)
class ChannelConfig:
    """A channel ready to send: its secret decrypted."""

    operator_id: str
    channel: str
    secret: str | None
    target: str | None
    events: list[str] | None


def aad(operator_id: str, channel: str) -> bytes:
    return f"{operator_id}\0notify.{channel}".encode()


def validate_channel(channel: str, field: str = "channel") -> str:
    if channel not in CHANNELS:
        raise BadInputError(field, f"{channel[:40]!r} is not a channel ({', '.join(CHANNELS)})")
    return channel


def validate_webhook(url: str, field: str = "webhook_url") -> str:
    """An https URL (http only to a loopback address, for a local receiver)."""
    url = url.strip()
    if len(url) > 2000 or any(c.isspace() for c in url):
        raise BadInputError(field, "is not a URL")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise BadInputError(field, "must be an https:// URL")
    if parts.scheme == "http":
        try:
            loopback = ipaddress.ip_address(parts.hostname).is_loopback
        except ValueError:
            loopback = parts.hostname == "localhost"
        if not loopback:
            raise BadInputError(field, "must be https:// (http only to a loopback address)")
    return url


def validate_secret(channel: str, secret: str) -> str:
    if channel == "discord":
        return validate_webhook(secret)
    secret = secret.strip()
    if not TELEGRAM_TOKEN_RE.match(secret):
        raise BadInputError("bot_token", "is not a Telegram bot token (digits:letters)")
    return secret


def validate_chat_id(chat_id: str, field: str = "chat_id") -> str:
    chat_id = chat_id.strip()
    if not CHAT_ID_RE.match(chat_id):
        raise BadInputError(field, "is not a Telegram chat id (a number or @channelname)")
    return chat_id


def _info(row: Any) -> ChannelInfo:
    events = list(row["events"]) if row["events"] is not None else None
    has = row["secret_enc"] is not None
    return ChannelInfo(row["channel"], row["enabled"], has, row["target"], events,
                       row["updated_at"])  # fmt: skip


class ChannelStore:
    def __init__(self, db: Database, secrets: SecretStore) -> None:
        self.db = db
        self.secrets = secrets

    async def set(
        self,
        operator_id: str,
        channel: str,
        *,
        secret: str | None = None,
        target: str | None = None,
        events: list[str] | None = None,
        enabled: bool = True,
        keep_events: bool = False,
    ) -> ChannelInfo:
        """Create or replace a channel's settings (a secret or target left None keeps the
        stored one; `keep_events` keeps the stored filter)."""
        validate_channel(channel)
        if channel == "cli":
            raise BadInputError("channel", "the CLI line is the fallback; it has no settings")
        sealed = None
        if secret is not None:
            sealed = await self.secrets.seal(aad(operator_id, channel),
                                             validate_secret(channel, secret))  # fmt: skip
        if target is not None:
            target = validate_chat_id(target)
        async with self.db.tx(Tenant.operator(operator_id)) as conn:
            old = await conn.fetchrow(
                "SELECT secret_enc, target FROM fleet_notify_channels "
                "WHERE operator_id = $1 AND channel = $2",
                operator_id, channel,
            )  # fmt: skip
            if (
                channel in SECRET_CHANNELS
                and sealed is None
                and (old is None or old["secret_enc"] is None)
            ):
                what = "webhook_url" if channel == "discord" else "bot_token"
                raise BadInputError(what, f"{channel} needs one (read from stdin)")
            if channel == "telegram" and target is None and (old is None or not old["target"]):
                raise BadInputError("chat_id", "telegram needs the chat to send to")
            row = await conn.fetchrow(
                """INSERT INTO fleet_notify_channels
                       (operator_id, channel, enabled, target, secret_enc, events)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (operator_id, channel) DO UPDATE SET
                       enabled = EXCLUDED.enabled,
                       target = COALESCE(EXCLUDED.target, fleet_notify_channels.target),
                       secret_enc = COALESCE(EXCLUDED.secret_enc, fleet_notify_channels.secret_enc),
                       events = CASE WHEN $7 THEN fleet_notify_channels.events
                                     ELSE EXCLUDED.events END
                   RETURNING *""",
                operator_id, channel, enabled, target, sealed, events, keep_events,
            )  # fmt: skip
        assert row is not None
        return _info(row)

    async def remove(self, operator_id: str, channel: str) -> ChannelInfo:
        validate_channel(channel)
        async with self.db.tx(Tenant.operator(operator_id)) as conn:
            row = await conn.fetchrow(
                "DELETE FROM fleet_notify_channels WHERE operator_id = $1 AND channel = $2 "
                "RETURNING *",
                operator_id, channel,
            )  # fmt: skip
        if row is None:
            raise ChannelNotFoundError(f"{operator_id} has no {channel} channel")
        return _info(row)

    async def entries(self, operator_id: str) -> list[ChannelInfo]:
        async with self.db.tx(Tenant.operator(operator_id)) as conn:
            rows = await conn.fetch(
                "SELECT * FROM fleet_notify_channels WHERE operator_id = $1 ORDER BY channel",
                operator_id,
            )
        return [_info(r) for r in rows]

    async def configs(self, operator_id: str) -> list[ChannelConfig]:
        """The operator's enabled channels with their secrets decrypted (for sending)."""
        async with self.db.tx(Tenant.operator(operator_id)) as conn:
            rows = await conn.fetch(
                "SELECT * FROM fleet_notify_channels WHERE operator_id = $1 AND enabled "
                "ORDER BY channel",
                operator_id,
            )
        out = []
        for r in rows:
            secret = None
            if r["secret_enc"] is not None:
                secret = await self.secrets.unseal(
                    aad(operator_id, r["channel"]), bytes(r["secret_enc"]),
                    f"the {r['channel']} secret of {operator_id}",
                )  # fmt: skip
            elif r["channel"] in SECRET_CHANNELS:
                continue  # not sealed yet (copied by migration 0012): seal_pending does it
            events = list(r["events"]) if r["events"] is not None else None
            out.append(ChannelConfig(operator_id, r["channel"], secret, r["target"], events))
        return out

    async def seal_pending(self) -> int:
        """Encrypt the values migration 0012 copied in the clear and clear them; returns how
        many. Runs at every engine start (a no-op once done)."""
        async with self.db.tx(Tenant.admin()) as conn:
            has_column = await conn.fetchval(
                "SELECT 1 FROM information_schema.columns WHERE table_name = "
                "'fleet_notify_channels' AND column_name = 'secret_plain'"
            )
            if not has_column:
                return 0
            rows = await conn.fetch(
                "SELECT operator_id, channel, secret_plain FROM fleet_notify_channels "
                "WHERE secret_plain IS NOT NULL FOR UPDATE"
            )
            for r in rows:
                sealed = await self.secrets.seal(aad(r["operator_id"], r["channel"]),
                                                 r["secret_plain"])  # fmt: skip
                await conn.execute(
                    "UPDATE fleet_notify_channels SET secret_enc = $3, secret_plain = NULL "
                    "WHERE operator_id = $1 AND channel = $2",
                    r["operator_id"], r["channel"], sealed,
                )  # fmt: skip
        return len(rows)
