"""Admin routes under /api/fleet/admin (tier sovereign): the tokens issued, their revocation,
and the tier stored for an operator. What they change binds at once on this server (its access
cache is dropped) and within `auth_cache_seconds` on every other."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict

from fleet_core.api.errors import responses
from fleet_core.api.identity import ADMIN_TIER, at_least
from fleet_core.auth import records
from fleet_core.auth.access import Access
from fleet_core.conductor import Actor
from fleet_core.engine import Engine
from fleet_core.models import OPERATOR_ID_RE, Tier

router = APIRouter(prefix="/api/fleet/admin", responses=responses(401, 403), tags=["admin"])
Admin = Annotated[Actor, Depends(at_least(ADMIN_TIER))]
OperatorId = Annotated[
    str, Path(pattern=OPERATOR_ID_RE.pattern, description="An operator id (a token's subject)")
]
OperatorFilter = Annotated[
    str | None, Query(pattern=OPERATOR_ID_RE.pattern, description="Only this operator's tokens")
]
Jti = Annotated[str, Path(pattern=records.JTI_RE.pattern, description="A token's id (jti)")]


class TokenOut(BaseModel):
    jti: str
    operator: str
    tier: Tier
    state: Literal["active", "revoked", "expired"]
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None


class TierIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tier: Tier | None  # null: no stored tier, the token's tier binds


class OperatorTier(BaseModel):
    operator: str
    tier: Tier | None


def _out(info: records.TokenInfo) -> TokenOut:
    return TokenOut.model_validate(info.to_dict())


def _changed(request: Request) -> None:
    access: Access = request.app.state.access
    access.invalidate()


def _engine(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


@router.get("/tokens", response_model=list[TokenOut], responses=responses(400))
async def list_tokens(
    request: Request, actor: Admin, operator: OperatorFilter = None
) -> list[TokenOut]:
    """Every token issued, newest first (at most 1000), with its state."""
    infos = await records.list_tokens(_engine(request).db, operator_id=operator)
    return [_out(i) for i in infos]


@router.post("/tokens/{jti}/revoke", response_model=TokenOut, responses=responses(400, 404))
async def revoke_token(request: Request, jti: Jti, actor: Admin) -> TokenOut:
    """Revoke a token: refused here at once, on every server within a minute."""
    info = await records.revoke_token(_engine(request).db, jti)
    _changed(request)
    return _out(info)


@router.put("/operators/{operator}/tier", response_model=OperatorTier, responses=responses(400))
async def set_tier(
    request: Request, operator: OperatorId, body: TierIn, actor: Admin
) -> OperatorTier:
    """Store the highest tier the operator may act with (null removes it)."""
    await records.set_operator_tier(_engine(request).db, operator, body.tier)
    _changed(request)
    _engine(request).conductor.governor.invalidate(operator)
    return OperatorTier(operator=operator, tier=body.tier)
