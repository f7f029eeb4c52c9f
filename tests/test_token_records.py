"""Recorded tokens (jti), their revocation, operators' stored tiers and the access cache that
applies both to every API request; the token lifetime bounds; the CLI verbs over them. Against
the session's embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from datetime import timedelta

import asyncpg
import pytest

from conftest import Pg, fleet
from fleet_core.auth import KeyStore, issue_token, records, verify_token
from fleet_core.auth.access import Access
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import AuthError, BadInputError, NotFoundError
from fleet_core.models import Tier


@pytest.fixture
def store(db: Database) -> KeyStore:
    return KeyStore(db, os.urandom(32))


# -- recorded tokens, revocation, stored tiers ----------------------------------------------------


async def test_issue_records_the_jti_first(store: KeyStore, su: asyncpg.Connection) -> None:
    token = await issue_token(store, "alice", Tier.ARCHITECT, timedelta(hours=2))
    claims = await verify_token(store, token)
    row = await su.fetchrow("SELECT * FROM fleet_tokens WHERE jti = $1", claims.jti)
    assert (row["operator_id"], row["tier"], row["revoked_at"]) == ("alice", "architect", None)
    assert (row["issued_at"], row["expires_at"]) == (claims.issued_at, claims.expires_at)
    # Bad input writes nothing.
    with pytest.raises(BadInputError):
        await issue_token(store, "alice", Tier.BUILDER, timedelta(hours=25))
    assert await su.fetchval("SELECT count(*) FROM fleet_tokens") == 1


@pytest.mark.parametrize(
    ("ttl", "max_ttl", "ok"),
    [
        (timedelta(hours=24), None, True),  # the default maximum: 24 h
        (timedelta(hours=24, seconds=1), None, False),
        (timedelta(days=7), timedelta(days=7), True),
        (timedelta(days=7, minutes=1), timedelta(days=7), False),
        (timedelta(days=30), timedelta(days=30), True),
        (timedelta(days=30, seconds=1), timedelta(days=90), False),  # 30 days whatever is set
        (timedelta(minutes=1), None, True),
        (timedelta(seconds=59), None, False),
    ],
)
async def test_ttl_bounds(
    store: KeyStore, ttl: timedelta, max_ttl: timedelta | None, ok: bool
) -> None:
    kw = {} if max_ttl is None else {"max_ttl": max_ttl}
    if ok:
        got = await verify_token(store, await issue_token(store, "alice", Tier.BUILDER, ttl, **kw))
        assert got.expires_at - got.issued_at == ttl
    else:
        with pytest.raises(BadInputError, match="must be between 1 minute and") as err:
            await issue_token(store, "alice", Tier.BUILDER, ttl, **kw)
        assert err.value.field == "ttl"


def test_ttl_setting_is_bounded() -> None:
    assert Settings().token_max_ttl_hours == 24
    assert Settings(token_max_ttl_hours=720).token_max_ttl_hours == 720
    for bad in (721, 0, -1):
        with pytest.raises(ValueError, match="token_max_ttl_hours"):
            Settings(token_max_ttl_hours=bad)
    for bad_cache in (0, 61):
        with pytest.raises(ValueError, match="auth_cache_seconds"):
            Settings(auth_cache_seconds=bad_cache)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_access_reads_a_token_at_most_once_per_cache_time(
    db: Database, store: KeyStore
) -> None:
    clock = Clock()
    access = Access(db, cache_s=30, clock=clock)
    claims = await verify_token(store, await issue_token(store, "alice", Tier.ARCHITECT))
    for _ in range(5):
        assert await access.tier_of(claims) == Tier.ARCHITECT
    assert access.reads == 1
    # Stored tiers: a lower one binds, a higher one does not raise the token's.
    await records.set_operator_tier(db, "alice", Tier.SOVEREIGN)
    await records.set_operator_tier(db, "alice", Tier.BUILDER)
    assert await access.tier_of(claims) == Tier.ARCHITECT  # cached
    clock.now += 29.9
    assert await access.tier_of(claims) == Tier.ARCHITECT
    clock.now += 0.1
    assert await access.tier_of(claims) == Tier.BUILDER and access.reads == 2
    await records.set_operator_tier(db, "alice", Tier.SOVEREIGN)
    access.invalidate()
    assert await access.tier_of(claims) == Tier.ARCHITECT
    await records.revoke_token(db, claims.jti)
    access.invalidate()
    with pytest.raises(AuthError, match="token revoked"):
        await access.tier_of(claims)


async def test_access_cache_is_bounded(db: Database, store: KeyStore) -> None:
    clock = Clock()
    access = Access(db, cache_s=30, clock=clock, max_entries=3)
    tokens = [await issue_token(store, "alice", Tier.BUILDER) for _ in range(5)]
    for token in tokens:
        await access.tier_of(await verify_token(store, token))
    assert len(access._cache) <= 3


async def test_tokens_table_is_admin_only(db: Database, store: KeyStore) -> None:
    await issue_token(store, "alice", Tier.BUILDER)
    async with db.tx(Tenant.operator("alice")) as conn:
        assert await conn.fetchval("SELECT count(*) FROM fleet_tokens") == 0
        assert await conn.execute("UPDATE fleet_tokens SET revoked_at = now()") == "UPDATE 0"
    assert [t.state for t in await records.list_tokens(db)] == ["active"]


async def test_revoke_unknown_or_malformed(db: Database) -> None:
    with pytest.raises(NotFoundError):
        await records.revoke_token(db, str(uuid.uuid4()))
    with pytest.raises(BadInputError) as err:
        await records.revoke_token(db, "nope")
    assert err.value.field == "jti"


async def test_cli_token_list_revoke_and_operator_tier(pg: Pg, db: Database) -> None:
    store = KeyStore(db, KeyStore.load_master_key(pg.settings))
    issued = await asyncio.to_thread(fleet, "token", "issue", "--operator", "bob", "--tier",
                                     "builder")  # fmt: skip
    assert issued.returncode == 0, issued.stderr
    jti = (await verify_token(store, issued.stdout.strip())).jti
    listed = await asyncio.to_thread(fleet, "token", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    [doc] = [t for t in json.loads(listed.stdout) if t["jti"] == jti]
    assert (doc["operator"], doc["tier"], doc["state"]) == ("bob", "builder", "active")
    text = await asyncio.to_thread(fleet, "token", "list", "--operator", "bob")
    assert jti in text.stdout and "active" in text.stdout
    revoked = await asyncio.to_thread(fleet, "token", "revoke", jti, "--json")
    assert revoked.returncode == 0, revoked.stderr
    assert json.loads(revoked.stdout)["state"] == "revoked"
    with pytest.raises(AuthError, match="revoked"):
        await Access(db).tier_of(await verify_token(store, issued.stdout.strip()))
    tier = await asyncio.to_thread(fleet, "operator", "tier", "bob", "observer", "--json")
    assert tier.returncode == 0 and json.loads(tier.stdout) == {
        "operator": "bob",
        "tier": "observer",
    }
    assert (await records.operator_tiers(db)) == {"bob": Tier.OBSERVER}
    shown = await asyncio.to_thread(fleet, "operator", "list", "--json")
    assert json.loads(shown.stdout) == [{"operator": "bob", "tier": "observer"}]
    cleared = await asyncio.to_thread(fleet, "operator", "tier", "bob", "none")
    assert cleared.returncode == 0 and "no stored tier" in cleared.stdout
    assert await records.operator_tiers(db) == {}


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("token", "issue", "--operator", "bob", "--tier", "builder", "--ttl", "2d"), 2,
         "--ttl: must be between 1 minute and 24h"),
        (("token", "revoke", "not-a-uuid"), 2, "JTI"),
        (("token", "revoke", str(uuid.uuid4())), 3, "not found"),
        (("token", "list", "--operator", "b b"), 2, "--operator"),
        (("operator", "tier", "bob", "king"), 2, "TIER"),
        (("operator", "tier", "b b", "builder"), 2, "NAME"),
    ],
)  # fmt: skip
def test_cli_token_and_operator_errors(
    pg: Pg, args: tuple[str, ...], code: int, needle: str
) -> None:
    result = fleet(*args)
    assert result.returncode == code, result.stderr
    assert needle in result.stderr and result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_longer_ttl_when_the_setting_allows(pg: Pg) -> None:
    result = fleet("token", "issue", "--operator", "bob", "--tier", "builder", "--ttl", "2d",
                   FLEET_TOKEN_MAX_TTL_HOURS="72")  # fmt: skip
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "args",
    [("token", "list"), ("token", "revoke", str(uuid.uuid4())), ("operator", "tier", "x", "builder"),
     ("operator", "list")],
)  # fmt: skip
def test_cli_token_and_operator_verbs_need_the_admin_tier(pg: Pg, args: tuple[str, ...]) -> None:
    result = fleet(*args, FLEET_TIER="builder")
    assert result.returncode == 4 and "sovereign" in result.stderr
