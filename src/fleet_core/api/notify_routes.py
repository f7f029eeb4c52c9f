"""The caller's notifications under /api/fleet/notifications: the outbox's pending and
dead-lettered deliveries, redrive, a test message, and the caller's channels (a webhook URL
or bot token goes in a PUT body only, is stored encrypted and never comes back)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from fleet_core.api.errors import responses
from fleet_core.api.identity import at_least
from fleet_core.conductor import Actor
from fleet_core.engine import Engine
from fleet_core.errors import ConfigError
from fleet_core.models import Tier
from fleet_core.notify.events import validate_events
from fleet_core.notify.service import NotifyService, send_test
from fleet_core.notify.settings import (
    CHAT_ID_RE,
    SECRET_CHANNELS,
    TELEGRAM_TOKEN_RE,
    WEBHOOK_RE,
    ChannelNotFoundError,
    ChannelStore,
)
from fleet_core.notify.status import outbox_status, redrive

router = APIRouter(prefix="/api/fleet/notifications", tags=["notifications"],
                   responses=responses(401))  # fmt: skip
Observer = Annotated[Actor, Depends(at_least(Tier.OBSERVER))]
Builder = Annotated[Actor, Depends(at_least(Tier.BUILDER))]
ChannelName = Literal["discord", "telegram", "desktop"]


class Channel(BaseModel):
    channel: str
    enabled: bool
    configured: bool
    target: str | None
    events: list[str] | None
    updated_at: str


EventName = Literal[
    "task.proposed", "task.spawning", "task.running", "task.pr_created", "task.reviewing",
    "task.ready", "task.merged", "task.failed", "task.retrying", "task.abandoned",
    "task.rejected", "task.cancelled", "task.stalled", "task.paused", "spawn.admitted",
    "monitor.unhealthy",
]  # fmt: skip
WEBHOOK = WEBHOOK_RE.pattern
BOT = TELEGRAM_TOKEN_RE.pattern
CHAT = CHAT_ID_RE.pattern


class DesktopSettings(BaseModel):
    """`events`: the event types to send (null: the defaults, what needs you)."""

    model_config = ConfigDict(extra="forbid")

    events: list[EventName] | None = Field(default=None, max_length=64)
    enabled: StrictBool = True


class DiscordSettings(DesktopSettings):
    """`webhook_url` (https, or http to a loopback address); omitted: the stored one (404
    when none is stored)."""

    webhook_url: str | None = Field(default=None, max_length=2000, pattern=WEBHOOK)


class TelegramSettings(DesktopSettings):
    """`bot_token` and `chat_id`; omitted: the stored ones (404 when none is stored)."""

    bot_token: str | None = Field(default=None, pattern=BOT)
    chat_id: str | None = Field(default=None, pattern=CHAT)


class TestRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    channel: Literal["discord", "telegram", "desktop", "cli"] | None = None


class TestResult(BaseModel):
    ok: bool
    status: int | None
    error: str | None


class RedriveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str | None = Field(default=None, min_length=1, max_length=128)


class Redriven(BaseModel):
    redriven: int


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


@asynccontextmanager
async def _service(request: Request) -> AsyncIterator[NotifyService]:
    """The engine's notification service, or one for this request (an engine without the
    background work)."""
    engine = _engine(request)
    if engine.notify is not None:
        yield engine.notify
        return
    store = engine.conductor.runtime.secrets.store
    svc = NotifyService(engine.settings, engine.db, store)
    try:
        yield svc
    finally:
        await svc.stop()


def _store(request: Request) -> ChannelStore:
    engine = _engine(request)
    store = engine.conductor.runtime.secrets.store
    if store is None:
        raise ConfigError("this engine has no secret store")
    return ChannelStore(engine.db, store)


@router.get("", responses=responses(400, 403))
async def notification_status(
    request: Request, actor: Observer, limit: Annotated[int, Query(ge=1, le=200)] = 50
) -> dict[str, Any]:
    """Counts, the oldest pending events and the dead-lettered deliveries of the caller."""
    return await outbox_status(_engine(request).db, actor.tenant, limit)


@router.post("/redrive", response_model=Redriven, responses=responses(400, 403))
async def redrive_notifications(request: Request, body: RedriveRequest, actor: Builder) -> Redriven:
    """Dead-lettered deliveries (all, or of one event by id prefix or dedup key) go back to
    attempt one."""
    return Redriven(redriven=await redrive(_engine(request).db, actor.tenant, body.id))


@router.post("/test", response_model=dict[str, TestResult], responses=responses(400, 403, 404))
async def test_notification(
    request: Request, body: TestRequest, actor: Builder
) -> dict[str, TestResult]:
    """A test message on each of the caller's channels (or one), sent now."""
    async with _service(request) as svc:
        out = await send_test(svc, actor.operator_id, body.channel)
    return {k: TestResult.model_validate(v) for k, v in out.items()}


@router.get("/channels", response_model=list[Channel], responses=responses(403))
async def list_channels(request: Request, actor: Observer) -> list[Channel]:
    """The caller's channels, never their secrets."""
    return [Channel(**i.to_dict()) for i in await _store(request).entries(actor.operator_id)]


async def _put(
    request: Request,
    actor: Actor,
    channel: str,
    body: DesktopSettings,
    secret: str | None = None,
    target: str | None = None,
) -> Channel:
    store = _store(request)
    # What the body may leave out (the stored secret, Telegram's stored chat) must be stored:
    # else the channel the body would complete does not exist yet (404).
    needs_secret = secret is None and channel in SECRET_CHANNELS
    needs_chat = channel == "telegram" and target is None
    if needs_secret or needs_chat:
        have = {i.channel: i for i in await store.entries(actor.operator_id)}
        stored = have.get(channel)
        if stored is None or (needs_chat and not stored.target):
            what = "webhook_url" if channel == "discord" else "bot_token and chat_id"
            raise ChannelNotFoundError(f"{actor.operator_id} has no {channel} channel yet: "
                                       f"give its {what}")  # fmt: skip
    events = validate_events(body.events) if body.events is not None else None
    info = await store.set(actor.operator_id, channel, secret=secret, target=target,
                           events=events, enabled=body.enabled)  # fmt: skip
    return Channel(**info.to_dict())


@router.put("/channels/discord", response_model=Channel, responses=responses(400, 403, 404))
async def put_discord(request: Request, body: DiscordSettings, actor: Builder) -> Channel:
    """Create or replace the caller's Discord webhook (stored encrypted, never returned)."""
    return await _put(request, actor, "discord", body, body.webhook_url)


@router.put("/channels/telegram", response_model=Channel, responses=responses(400, 403, 404))
async def put_telegram(request: Request, body: TelegramSettings, actor: Builder) -> Channel:
    """Create or replace the caller's Telegram bot token (encrypted) and chat."""
    return await _put(request, actor, "telegram", body, body.bot_token, body.chat_id)


@router.put("/channels/desktop", response_model=Channel, responses=responses(400, 403))
async def put_desktop(request: Request, body: DesktopSettings, actor: Builder) -> Channel:
    """The desktop channel (notify-send on the engine's machine) for the caller."""
    return await _put(request, actor, "desktop", body)


async def _delete(request: Request, actor: Actor, channel: ChannelName) -> Channel:
    return Channel(**(await _store(request).remove(actor.operator_id, channel)).to_dict())


# One DELETE per channel path, beside its PUT (a `{channel}` template would answer on each
# channel's path with methods that path's own schema does not list).
@router.delete("/channels/discord", response_model=Channel, responses=responses(403, 404))
async def delete_discord(request: Request, actor: Builder) -> Channel:
    """Delete the caller's Discord settings (404 when there are none)."""
    return await _delete(request, actor, "discord")


@router.delete("/channels/telegram", response_model=Channel, responses=responses(403, 404))
async def delete_telegram(request: Request, actor: Builder) -> Channel:
    """Delete the caller's Telegram settings (404 when there are none)."""
    return await _delete(request, actor, "telegram")


@router.delete("/channels/desktop", response_model=Channel, responses=responses(403, 404))
async def delete_desktop(request: Request, actor: Builder) -> Channel:
    """Delete the caller's desktop settings (404 when there are none)."""
    return await _delete(request, actor, "desktop")
