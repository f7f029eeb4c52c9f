"""Who is calling: only a verified ES256 token says so. Identity headers a client may send
(x-operator-id, x-operator-tier, ...) are never read. Each operation has a minimum tier
(upstream SDD §5); the tenant of every database transaction comes from the token's claims.

A token binds only while it is on record and not revoked, and at the lower of its own tier and
the one an admin stored for its operator (`fleet_core.auth.access`), on every route."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fleet_core.auth.access import Access
from fleet_core.auth.keys import KeyStore
from fleet_core.auth.tokens import Claims, verify_token
from fleet_core.conductor import Actor
from fleet_core.errors import AuthError, DeniedError
from fleet_core.models import Tier

ADMIN_TIER = Tier.SOVEREIGN
# Declares the scheme in the OpenAPI document; the header is read (and refused) below.
bearer = HTTPBearer(
    auto_error=False, bearerFormat="JWT", description="An ES256 JWT from `fleet token issue`"
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
# A route's openapi_extra: no token, or a valid one.
OPTIONAL_BEARER: dict[str, Any] = {"security": [{}, {"HTTPBearer": []}]}


async def authenticate(request: Request, token: str) -> tuple[Claims, Tier]:
    """The token's claims and the tier it may act with now; AuthError if it does not bind."""
    store: KeyStore = request.app.state.keys
    access: Access = request.app.state.access
    claims = await verify_token(store, token)
    return claims, await access.tier_of(claims)


def bearer_token(request: Request) -> str | None:
    """The token of `Authorization: Bearer ...`; None without the header; AuthError when the
    header is there but holds no bearer token."""
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("a bearer token is required (Authorization: Bearer <jwt>)")
    return token.strip()


async def caller(request: Request, _declared: Credentials = None) -> Actor:
    token = bearer_token(request)
    if token is None:
        raise AuthError("a bearer token is required (Authorization: Bearer <jwt>)")
    claims, tier = await authenticate(request, token)
    request.state.claims = claims
    return Actor(claims.operator_id, tier)


async def optional_caller(request: Request) -> Actor | None:
    """The caller if the request carries a token (which must then be valid), else None. A
    route using it declares its optional security itself (OPTIONAL_BEARER)."""
    if request.headers.get("authorization") is None:
        return None
    return await caller(request)


def at_least(tier: Tier) -> Callable[..., Awaitable[Actor]]:
    """A dependency: the verified caller, if their effective tier is at least `tier`."""

    async def check(request: Request, _declared: Credentials = None) -> Actor:
        actor = await caller(request)
        if not actor.tier.at_least(tier):
            raise DeniedError(
                f"this needs tier {tier.value} or higher; {actor.operator_id} is {actor.tier.value}"
            )
        return actor

    return check
