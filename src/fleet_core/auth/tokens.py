"""ES256 bearer tokens: who (sub) acts at which tier, signed by the engine's current key.

Verification reads the unverified header only to refuse any algorithm but ES256 and to find
the key by kid; no key is used before that, so `none`, HS256 (even keyed with the public key's
bytes) and RS256 never reach a signature check.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt

from fleet_core.auth.keys import KeyStore
from fleet_core.auth.records import record_token
from fleet_core.db.database import Tenant
from fleet_core.errors import AuthError, BadInputError
from fleet_core.models import OPERATOR_ID_RE, Tier

ISSUER = "fleet"
AUDIENCE = "fleet-api"
ALGORITHM = "ES256"
MIN_TTL = timedelta(minutes=1)
MAX_TTL = timedelta(days=30)  # whatever the setting says
DEFAULT_MAX_TTL = timedelta(hours=24)
LEEWAY = timedelta(seconds=30)
MAX_TOKEN_CHARS = 8192
MAX_KID_CHARS = 128
REQUIRED = ["exp", "iat", "sub", "aud", "iss", "jti"]


@dataclass(frozen=True)
class Claims:
    operator_id: str
    tier: Tier
    jti: str
    issued_at: datetime
    expires_at: datetime


async def issue_token(
    store: KeyStore,
    operator_id: str,
    tier: Tier,
    ttl: timedelta = timedelta(hours=1),
    *,
    max_ttl: timedelta = DEFAULT_MAX_TTL,
) -> str:
    """A signed token for `operator_id` at `tier`, valid for `ttl` (1 minute to `max_ttl`, the
    `token_max_ttl_hours` setting, itself at most 30 days). Its jti is recorded before the
    token is returned: a token that is not on record is refused by the API."""
    if not isinstance(operator_id, str) or not OPERATOR_ID_RE.match(operator_id):
        raise BadInputError(
            "operator",
            f"{operator_id!r} is not a valid operator id (1-128 of A-Z a-z 0-9 . _ @ : + -, "
            "starting with a letter or digit)",
        )
    try:
        tier = Tier(tier)
    except ValueError:
        raise BadInputError(
            "tier", f"{tier!r} is not one of {', '.join(t.value for t in Tier)}"
        ) from None
    max_ttl = min(max_ttl, MAX_TTL)
    if not MIN_TTL <= ttl <= max_ttl:
        raise BadInputError(
            "ttl",
            f"must be between 1 minute and {describe(max_ttl)} (the longest lifetime allowed, "
            f"setting token_max_ttl_hours), not {describe(ttl)}",
        )
    kid, key = await store.signer()
    now = int(store.clock().timestamp())
    jti, exp = str(uuid.uuid4()), now + int(ttl.total_seconds())
    claims: dict[str, Any] = {
        "sub": operator_id,
        "tier": tier.value,
        "aud": AUDIENCE,
        "iss": ISSUER,
        "iat": now,
        "nbf": now,
        "exp": exp,
        "jti": jti,
    }
    issued, expires = datetime.fromtimestamp(now, UTC), datetime.fromtimestamp(exp, UTC)
    async with store.db.tx(Tenant.admin()) as conn:
        await record_token(conn, jti, operator_id, tier, issued, expires)
    return jwt.encode(claims, key, algorithm=ALGORITHM, headers={"kid": kid})


def describe(delta: timedelta) -> str:
    """`7d`, `24h`, `90m`, `45s`: the largest whole unit (hours up to two days)."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and seconds % size == 0 and (unit != "d" or seconds >= 2 * size):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _header(token: str) -> dict[str, Any]:
    if not isinstance(token, str) or not token or len(token) > MAX_TOKEN_CHARS:
        raise AuthError("malformed token")
    try:
        return jwt.get_unverified_header(token)
    except jwt.InvalidTokenError:
        raise AuthError("malformed token") from None


async def verify_token(store: KeyStore, token: str) -> Claims:
    """The token's claims if it is an ES256 token signed by a key valid now; else AuthError."""
    header = _header(token)
    alg = header.get("alg")
    if alg != ALGORITHM:
        shown = alg[:20] if isinstance(alg, str) else type(alg).__name__
        raise AuthError(f"algorithm {shown!r} is not accepted (only {ALGORITHM})")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_CHARS:
        raise AuthError("token has no valid key id (kid)")
    key = await store.verifier(kid)
    if key is None:
        raise AuthError("unknown or retired signing key")
    try:
        payload = jwt.decode(
            token,
            key,
            algorithms=[ALGORITHM],
            audience=AUDIENCE,
            issuer=ISSUER,
            options={"require": REQUIRED},
            leeway=LEEWAY,
        )
    except jwt.ExpiredSignatureError:
        raise AuthError("token expired") from None
    except jwt.ImmatureSignatureError:
        raise AuthError("token not valid yet") from None
    except jwt.MissingRequiredClaimError as exc:
        raise AuthError(f"token lacks the {exc.claim} claim") from None
    except jwt.InvalidAudienceError:
        raise AuthError("token is for another audience") from None
    except jwt.InvalidIssuerError:
        raise AuthError("token is from another issuer") from None
    except jwt.InvalidSignatureError:
        raise AuthError("bad signature") from None
    except jwt.InvalidTokenError:
        raise AuthError("invalid token") from None
    return _claims(payload)


def _claims(payload: dict[str, Any]) -> Claims:
    sub, tier, jti = payload.get("sub"), payload.get("tier"), payload.get("jti")
    if not isinstance(sub, str) or not OPERATOR_ID_RE.match(sub):
        raise AuthError("token subject is not a valid operator id")
    if not isinstance(tier, str) or tier not in {t.value for t in Tier}:
        raise AuthError("token tier is not a valid tier")
    if not isinstance(jti, str) or not jti or len(jti) > 128:
        raise AuthError("token id (jti) is not valid")
    iat, exp = payload["iat"], payload["exp"]  # numbers: pyjwt has checked them
    return Claims(
        operator_id=sub,
        tier=Tier(tier),
        jti=jti,
        issued_at=datetime.fromtimestamp(iat, UTC),
        expires_at=datetime.fromtimestamp(exp, UTC),
    )
