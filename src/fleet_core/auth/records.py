"""What the database knows about API callers: every token issued (by jti, revocable) and the
tier an admin stored for an operator (`fleet_config.tier`, the highest it may act with).

Every query runs in an admin transaction: only admins read or change these rows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from fleet_core.db.database import Database, QueryClass, Tenant
from fleet_core.errors import BadInputError, NotFoundError
from fleet_core.models import OPERATOR_ID_RE, Tier

if TYPE_CHECKING:
    from fleet_core.db.database import Conn

TokenState = Literal["active", "revoked", "expired"]
# What `issue_token` writes (a UUID); anything else cannot be in the table.
JTI_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
COLUMNS = "jti, operator_id, tier, issued_at, expires_at, revoked_at"
MAX_LISTED = 1000


@dataclass(frozen=True)
class TokenInfo:
    jti: str
    operator_id: str
    tier: Tier
    issued_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    state: TokenState

    def to_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.astimezone(UTC).isoformat(timespec="seconds") if t else None

        return {
            "jti": self.jti,
            "operator": self.operator_id,
            "tier": self.tier.value,
            "state": self.state,
            "issued_at": iso(self.issued_at),
            "expires_at": iso(self.expires_at),
            "revoked_at": iso(self.revoked_at),
        }


def _info(row: Any, now: datetime) -> TokenInfo:
    revoked, expires = row["revoked_at"], row["expires_at"]
    state: TokenState = "revoked" if revoked else "expired" if expires <= now else "active"
    return TokenInfo(
        row["jti"], row["operator_id"], Tier(row["tier"]), row["issued_at"], expires, revoked, state
    )


def check_jti(jti: str, field: str = "jti") -> str:
    text = jti.strip().lower() if isinstance(jti, str) else ""
    if not JTI_RE.match(text):
        raise BadInputError(field, f"{str(jti)[:60]!r} is not a token id (a UUID, as listed)")
    return text


def check_operator(operator_id: str, field: str = "operator") -> str:
    if not isinstance(operator_id, str) or not OPERATOR_ID_RE.match(operator_id):
        raise BadInputError(
            field,
            f"{str(operator_id)[:60]!r} is not a valid operator id (1-128 of A-Z a-z 0-9 . _ @ "
            ": + -, starting with a letter or digit)",
        )
    return operator_id


async def record_token(
    conn: Conn, jti: str, operator_id: str, tier: Tier, issued_at: datetime, expires_at: datetime
) -> None:
    """Called by `issue_token`, in an admin transaction, before the token is handed out."""
    await conn.execute(
        "INSERT INTO fleet_tokens (jti, operator_id, tier, issued_at, expires_at) "
        "VALUES ($1, $2, $3, $4, $5)",
        jti, operator_id, tier.value, issued_at, expires_at,
    )  # fmt: skip


async def list_tokens(db: Database, *, operator_id: str | None = None) -> list[TokenInfo]:
    """The newest tokens first (at most MAX_LISTED), optionally one operator's."""
    if operator_id is not None:
        check_operator(operator_id)
    async with db.tx(Tenant.admin(), QueryClass.LIST) as conn:
        now = await conn.fetchval("SELECT now()")
        rows = await conn.fetch(
            f"SELECT {COLUMNS} FROM fleet_tokens WHERE $1::text IS NULL OR operator_id = $1 "
            "ORDER BY issued_at DESC, jti LIMIT $2",
            operator_id,
            MAX_LISTED,
        )
    return [_info(r, now) for r in rows]


async def revoke_token(db: Database, jti: str) -> TokenInfo:
    """Mark the token revoked (once; revoking again changes nothing). NotFoundError if the
    jti was never recorded."""
    jti = check_jti(jti)
    async with db.tx(Tenant.admin()) as conn:
        now = await conn.fetchval("SELECT now()")
        row = await conn.fetchrow(
            "UPDATE fleet_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE jti = $1 "
            f"RETURNING {COLUMNS}",
            jti,
        )
    if row is None:
        raise NotFoundError(f"token {jti} not found (never issued, or issued elsewhere)")
    return _info(row, now)


async def token_state(conn: Conn, jti: str) -> Any:
    """One row: the token's operator and revocation, and its operator's stored tier (None when
    no row matched)."""
    return await conn.fetchrow(
        "SELECT t.operator_id, t.revoked_at IS NOT NULL AS revoked, c.tier AS stored_tier "
        "FROM fleet_tokens t LEFT JOIN fleet_config c ON c.operator_id = t.operator_id "
        "WHERE t.jti = $1",
        jti,
    )


async def set_operator_tier(db: Database, operator_id: str, tier: Tier | None) -> None:
    """Store the highest tier the operator may act with (None: whatever its tokens say)."""
    check_operator(operator_id)
    async with db.tx(Tenant.admin()) as conn:
        await conn.execute(
            "INSERT INTO fleet_config (operator_id, tier) VALUES ($1, $2) "
            "ON CONFLICT (operator_id) DO UPDATE SET tier = EXCLUDED.tier",
            operator_id,
            tier.value if tier else None,
        )


async def operator_tiers(db: Database) -> dict[str, Tier]:
    """Every operator with a stored tier."""
    async with db.tx(Tenant.admin(), QueryClass.LIST) as conn:
        rows = await conn.fetch(
            "SELECT operator_id, tier FROM fleet_config WHERE tier IS NOT NULL ORDER BY 1"
        )
    return {r["operator_id"]: Tier(r["tier"]) for r in rows}
