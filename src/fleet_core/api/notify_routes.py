"""The caller's notifications under /api/fleet/notifications: the outbox's pending and
dead-lettered deliveries, redrive, a test message, and the caller's channels (a webhook URL
or bot token goes in a PUT body only, is stored encrypted and never comes back)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field

from fleet_core.api.errors import responses
from fleet_core.api.identity import at_least
from fleet_core.conductor import Actor
from fleet_core.engine import Engine
from fleet_core.errors import BadInputError, ConfigError
from fleet_core.models import Tier
from fleet_core.notify.events import validate_events
from fleet_core.notify.service import NotifyService, send_test
from fleet_core.notify.settings import ChannelStore
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


class ChannelSettings(BaseModel):
    """`webhook_url` (discord) or `bot_token` + `chat_id` (telegram); omitted secrets keep the
    stored one. `events`: the event types to send (null: the defaults)."""

    model_config = ConfigDict(extra="forbid")

    webhook_url: str | None = Field(default=None, max_length=2000)
    bot_token: str | None = Field(default=None, max_length=200)
    chat_id: str | None = Field(default=None, max_length=200)
    events: list[str] | None = Field(default=None, max_length=64)
    enabled: bool = True


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


@router.get("", responses=responses(403))
async def notification_status(
    request: Request, actor: Observer, limit: Annotated[int, Field(ge=1, le=200)] = 50
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


@router.put("/channels/{channel}", response_model=Channel, responses=responses(400, 403))
async def put_channel(
    request: Request, channel: ChannelName, body: ChannelSettings, actor: Builder
) -> Channel:
    """Create or replace the caller's settings of `channel`."""
    if channel != "discord" and body.webhook_url is not None:
        raise BadInputError("webhook_url", "only discord has a webhook URL")
    if channel != "telegram" and (body.bot_token is not None or body.chat_id is not None):
        raise BadInputError("bot_token", "only telegram has a bot token and chat id")
    events = validate_events(body.events) if body.events is not None else None
    secret = body.webhook_url if channel == "discord" else body.bot_token
    info = await _store(request).set(actor.operator_id, channel, secret=secret,
                                     target=body.chat_id, events=events,
                                     enabled=body.enabled)  # fmt: skip
    return Channel(**info.to_dict())


@router.delete("/channels/{channel}", response_model=Channel, responses=responses(403, 404))
async def delete_channel(request: Request, channel: ChannelName, actor: Builder) -> Channel:
    """Delete the caller's settings of `channel` (404 when there are none)."""
    return Channel(**(await _store(request).remove(actor.operator_id, channel)).to_dict())
