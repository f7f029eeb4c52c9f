"""Whether a verified token still binds, and at which tier.

A signature says who issued a token, not whether an admin has since revoked it or lowered its
operator's tier. For every request the API reads the token's record (`fleet_tokens`) and the
operator's stored tier (`fleet_config.tier`) in one query, cached per token for at most
`cache_s` seconds (the `auth_cache_seconds` setting, at most 60). So on every server:

- a token that was never recorded (issued before jti was recorded) is refused;
- a revoked token is refused once the cache entry is older than `cache_s`, at once on the
  server that revoked it (its cache is dropped);
- the effective tier is the lower of the token's and the stored one, with the same delay.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from fleet_core.auth.records import token_state
from fleet_core.auth.tokens import Claims
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import AuthError
from fleet_core.models import Tier

DEFAULT_CACHE_S = 30.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class _Entry:
    found: bool
    operator_id: str | None
    revoked: bool
    stored_tier: Tier | None
    read_at: float


class Access:
    def __init__(
        self,
        db: Database,
        *,
        cache_s: float = DEFAULT_CACHE_S,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = MAX_ENTRIES,
    ) -> None:
        self.db = db
        self.cache_s = cache_s
        self.clock = clock
        self.max_entries = max_entries
        self.reads = 0  # database reads so far (the cache's misses)
        self._cache: dict[str, _Entry] = {}

    def invalidate(self) -> None:
        """Forget everything read: the next request of every token reads its record again."""
        self._cache.clear()

    async def tier_of(self, claims: Claims) -> Tier:
        """The tier `claims` may act with now; AuthError if the token no longer binds."""
        entry = await self._entry(claims.jti)
        if not entry.found:
            raise AuthError(
                "token is not on record (issued before token ids were recorded, or unknown): "
                "issue a new one with `fleet token issue`"
            )
        if entry.operator_id != claims.operator_id:
            raise AuthError("token does not match its record")
        if entry.revoked:
            raise AuthError("token revoked")
        tier = claims.tier
        if entry.stored_tier is not None and not entry.stored_tier.at_least(tier):
            tier = entry.stored_tier
        return tier

    async def _entry(self, jti: str) -> _Entry:
        now = self.clock()
        hit = self._cache.get(jti)
        if hit is not None and now - hit.read_at < self.cache_s:
            return hit
        async with self.db.tx(Tenant.admin()) as conn:
            row = await token_state(conn, jti)
        self.reads += 1
        if row is None:
            entry = _Entry(False, None, False, None, now)
        else:
            stored = Tier(row["stored_tier"]) if row["stored_tier"] else None
            entry = _Entry(True, row["operator_id"], bool(row["revoked"]), stored, now)
        self._remember(jti, entry, now)
        return entry

    def _remember(self, jti: str, entry: _Entry, now: float) -> None:
        if len(self._cache) >= self.max_entries:
            fresh = {k: e for k, e in self._cache.items() if now - e.read_at < self.cache_s}
            self._cache = fresh if len(fresh) < self.max_entries else {}
        self._cache[jti] = entry
