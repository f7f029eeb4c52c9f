"""The caller's own secrets under /api/fleet/secrets: names and times out, values only in.

A value travels in a PUT body only (never in a URL), is stored encrypted, and no answer, log
line or audit row carries it. Another operator's secrets are out of reach: every query runs
as the verified caller (row-level security)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from fleet_core.api.errors import responses
from fleet_core.api.identity import at_least
from fleet_core.auth.secret_store import MAX_VALUE_BYTES, NAME_RE, SecretInfo, SecretStore
from fleet_core.conductor import Actor
from fleet_core.engine import Engine
from fleet_core.errors import ConfigError
from fleet_core.models import Tier

# What the store accepts, declared (names the launcher controls are refused too: 400).
SecretName = Annotated[str, Path(pattern=NAME_RE.pattern, max_length=128)]

router = APIRouter(prefix="/api/fleet/secrets", tags=["secrets"], responses=responses(401))
Observer = Annotated[Actor, Depends(at_least(Tier.OBSERVER))]
Builder = Annotated[Actor, Depends(at_least(Tier.BUILDER))]


class SecretValue(BaseModel):
    model_config = ConfigDict(extra="forbid")

    value: str = Field(min_length=1, max_length=MAX_VALUE_BYTES)


class Secret(BaseModel):
    """A stored secret, never its value; `agents`: the agent types whose allowlist has it."""

    name: str
    set_at: datetime
    updated_at: datetime
    agents: list[str]


class SecretSet(Secret):
    created: bool


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def _store(request: Request) -> SecretStore:
    store = _engine(request).conductor.runtime.secrets.store
    if store is None:
        raise ConfigError("this engine has no secret store")
    return store


def _doc(request: Request, info: SecretInfo) -> Secret:
    adapters = _engine(request).conductor.runtime.adapters.values()
    agents = sorted(a.agent_type.value for a in adapters if info.name in a.env)
    return Secret(name=info.name, set_at=info.set_at, updated_at=info.updated_at, agents=agents)


@router.get("", response_model=list[Secret], responses=responses(403))
async def list_secrets(request: Request, actor: Observer) -> list[Secret]:
    """The caller's secrets by name, with when each was first and last set."""
    return [_doc(request, i) for i in await _store(request).entries(actor.operator_id)]


@router.put(
    "/{name}",
    response_model=SecretSet,
    responses={201: {"model": SecretSet}, **responses(400, 403)},
)
async def put_secret(
    request: Request, response: Response, name: SecretName, body: SecretValue, actor: Builder
) -> SecretSet:
    """Store or replace the caller's secret NAME (201 when new, 200 when replaced)."""
    info, created = await _store(request).set(actor.operator_id, name, body.value)
    response.status_code = 201 if created else 200
    return SecretSet(**_doc(request, info).model_dump(), created=created)


@router.delete("/{name}", response_model=Secret, responses=responses(400, 403, 404))
async def delete_secret(request: Request, name: SecretName, actor: Builder) -> Secret:
    """Delete the caller's secret NAME (404 when the caller has none by that name)."""
    return _doc(request, await _store(request).unset(actor.operator_id, name))
