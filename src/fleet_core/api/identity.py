"""Who is calling: only a verified ES256 token says so. Identity headers a client may send
(x-operator-id, x-operator-tier, ...) are never read. Each operation has a minimum tier
(upstream SDD §5); the tenant of every database transaction comes from the token's claims."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import Request

from fleet_core.auth.keys import KeyStore
from fleet_core.auth.tokens import verify_token
from fleet_core.conductor import Actor
from fleet_core.errors import AuthError, DeniedError
from fleet_core.models import Tier

ADMIN_TIER = Tier.SOVEREIGN


async def caller(request: Request) -> Actor:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("a bearer token is required (Authorization: Bearer <jwt>)")
    store: KeyStore = request.app.state.keys
    claims = await verify_token(store, token.strip())
    return Actor(claims.operator_id, claims.tier)


def at_least(tier: Tier) -> Callable[[Request], Awaitable[Actor]]:
    """A dependency: the verified caller, if their tier is at least `tier`."""

    async def check(request: Request) -> Actor:
        actor = await caller(request)
        if not actor.tier.at_least(tier):
            raise DeniedError(
                f"this needs tier {tier.value} or higher; {actor.operator_id} is {actor.tier.value}"
            )
        return actor

    return check
