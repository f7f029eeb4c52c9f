"""Signing keys and bearer tokens, against the session's embedded PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import re
import stat
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from conftest import Pg, fleet
from fleet_core.auth import AUDIENCE, ISSUER, KeyStore, issue_token, verify_token
from fleet_core.auth.keys import NONCE_BYTES, UNKNOWN_KID_RELOAD_S, thumbprint
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import AuthError, BadInputError, ConfigError
from fleet_core.models import Tier


@pytest.fixture
def master() -> bytes:
    return os.urandom(32)


@pytest.fixture
def store(db: Database, master: bytes) -> KeyStore:
    return KeyStore(db, master)


def later(delta: timedelta):
    return lambda: datetime.now(UTC) + delta


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segment(doc: dict[str, Any]) -> str:
    return b64(json.dumps(doc).encode())


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    doc = {"sub": "alice", "tier": "builder", "aud": AUDIENCE, "iss": ISSUER, "iat": now,
           "nbf": now, "exp": now + 600, "jti": "jti-1"}  # fmt: skip
    doc.update(overrides)
    return {k: v for k, v in doc.items() if v is not None}


async def craft(store: KeyStore, **overrides: Any) -> str:
    """A token signed with the store's real private key, with any claims we like."""
    kid, key = await store.signer()
    return jwt.encode(claims(**overrides), key, algorithm="ES256", headers={"kid": kid})


async def refused(store: KeyStore, token: str, reason: str) -> None:
    with pytest.raises(AuthError, match=reason) as err:
        await verify_token(store, token)
    assert err.value.exit_code == 4 and err.value.code == "unauthorized"


# -- issue and verify ---------------------------------------------------------------------------


async def test_issue_verify_round_trip(store: KeyStore) -> None:
    token = await issue_token(store, "alice", Tier.BUILDER, timedelta(minutes=30))
    got = await verify_token(store, token)
    assert (got.operator_id, got.tier) == ("alice", Tier.BUILDER)
    assert got.expires_at - got.issued_at == timedelta(minutes=30)
    assert abs(got.issued_at - datetime.now(UTC)) < timedelta(seconds=5)
    header = jwt.get_unverified_header(token)
    assert header["alg"] == "ES256"
    [info] = await store.keys()
    assert header["kid"] == info.kid and info.state == "signing"
    [jwk] = (await store.jwks())["keys"]
    assert jwk["kid"] == info.kid == thumbprint(jwk)
    assert (jwk["alg"], jwk["use"], jwk["kty"], jwk["crv"]) == ("ES256", "sig", "EC", "P-256")
    assert "d" not in jwk
    # Anyone holding the JWKS can verify, with pyjwt alone.
    payload = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience=AUDIENCE)
    assert payload["sub"] == "alice" and payload["tier"] == "builder" and payload["jti"]
    other = await verify_token(store, await issue_token(store, "alice", Tier.BUILDER))
    assert other.jti != got.jti


def test_thumbprint_is_rfc7638() -> None:
    # The required members only, in lexicographic order, no whitespace; other members ignored.
    jwk = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
           "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "kid": "ignored", "use": "sig"}  # fmt: skip
    canon = '{"crv":"P-256","kty":"EC","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}'
    assert thumbprint(jwk) == b64(hashlib.sha256(canon.encode()).digest())


@pytest.mark.parametrize(
    ("operator", "tier", "ttl", "field"),
    [
        ("bad id!", Tier.BUILDER, timedelta(hours=1), "operator"),
        ("", Tier.BUILDER, timedelta(hours=1), "operator"),
        ("alice", "emperor", timedelta(hours=1), "tier"),
        ("alice", Tier.BUILDER, timedelta(seconds=59), "ttl"),
        ("alice", Tier.BUILDER, timedelta(days=30, seconds=1), "ttl"),
    ],
)
async def test_issue_rejects_bad_input(
    store: KeyStore, operator: str, tier: Any, ttl: timedelta, field: str
) -> None:
    with pytest.raises(BadInputError) as err:
        await issue_token(store, operator, tier, ttl)
    assert err.value.field == field


# -- refusals -----------------------------------------------------------------------------------


async def test_alg_none_hs256_and_rs256_refused_before_any_key_is_used(
    db: Database, store: KeyStore, master: bytes
) -> None:
    kid, _ = await store.signer()
    public = await store.verifier(kid)
    assert public is not None
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    body = segment(claims())
    none = f"{segment({'alg': 'none', 'typ': 'JWT', 'kid': kid})}.{body}."
    signing_input = f"{segment({'alg': 'HS256', 'typ': 'JWT', 'kid': kid})}.{body}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    hs256 = f"{signing_input}.{b64(mac)}"
    # Sanity: a verifier that trusted the header's alg would accept this forgery.
    assert jwt.decode(hs256, pem.decode(), algorithms=["HS256"], audience=AUDIENCE,
                      options={"verify_signature": False})["sub"] == "alice"  # fmt: skip
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rs256 = jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": kid})
    fresh = KeyStore(db, master)  # another server, with nothing loaded yet
    for token, alg in ((none, "none"), (hs256, "HS256"), (rs256, "RS256")):
        await refused(fresh, token, f"algorithm '{alg}' is not accepted")
    assert fresh.loads == 0  # refused on the header alone: no key was even read


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}, "expired"),
        ({"aud": "someone-else"}, "another audience"),
        ({"iss": "not-fleet"}, "another issuer"),
        ({"jti": None}, "lacks the jti claim"),
        ({"sub": None}, "lacks the sub claim"),
        ({"exp": None}, "lacks the exp claim"),
        ({"tier": "emperor"}, "tier is not a valid tier"),
        ({"tier": None}, "tier is not a valid tier"),
        ({"sub": "bad id!"}, "subject is not a valid operator id"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
    ],
    ids=["expired", "aud", "iss", "no-jti", "no-sub", "no-exp", "tier", "no-tier", "sub", "nbf"],
)
async def test_bad_claims_refused(store: KeyStore, overrides: dict[str, Any], reason: str) -> None:
    await refused(store, await craft(store, **overrides), reason)


async def test_expiry_allows_30s_of_clock_skew(store: KeyStore) -> None:
    now = int(time.time())
    assert await verify_token(store, await craft(store, exp=now - 10, iat=now - 100))
    await refused(store, await craft(store, exp=now - 45, iat=now - 100), "expired")


async def test_unknown_kid_tamper_and_foreign_key_refused(store: KeyStore) -> None:
    good = await issue_token(store, "alice", Tier.BUILDER)
    head, body, sig = good.split(".")
    forged = json.loads(base64.urlsafe_b64decode(body + "=="))
    forged["tier"] = "sovereign"
    await refused(store, f"{head}.{segment(forged)}.{sig}", "bad signature")
    stranger = ec.generate_private_key(ec.SECP256R1())
    kid = jwt.get_unverified_header(good)["kid"]
    await refused(store, jwt.encode(claims(), stranger, "ES256", {"kid": kid}), "bad signature")
    await refused(store, jwt.encode(claims(), stranger, "ES256", {"kid": "x" * 43}), "unknown")
    await refused(store, jwt.encode(claims(), stranger, "ES256"), "no valid key id")
    for junk in ("", "abc", "a.b.c", "x" * 9000):
        await refused(store, junk, "malformed")


# -- rotation, JWKS, caches ---------------------------------------------------------------------


async def test_rotation_overlap_then_expiry(
    db: Database, store: KeyStore, master: bytes, su: asyncpg.Connection
) -> None:
    first = await store.ensure_signing_key()
    old_token = await issue_token(store, "alice", Tier.ARCHITECT)
    second = await store.rotate(overlap=timedelta(hours=1))
    assert second.kid != first.kid and second.state == "signing"
    new_token = await issue_token(store, "alice", Tier.ARCHITECT)
    assert jwt.get_unverified_header(new_token)["kid"] == second.kid
    states = {k.kid: k for k in await store.keys()}
    assert states[first.kid].state == "verifying" and states[second.kid].state == "signing"
    assert states[first.kid].verify_until - states[first.kid].signing_until == timedelta(hours=1)
    # During the overlap both verify, and the JWKS lists both.
    assert (await verify_token(store, old_token)).tier == Tier.ARCHITECT
    assert await verify_token(store, new_token)
    assert {k["kid"] for k in (await store.jwks())["keys"]} == {first.kid, second.kid}
    # Two hours on (another server's clock), the old key no longer verifies.
    after = KeyStore(db, master, clock=later(timedelta(hours=2)))
    await refused(after, old_token, "unknown or retired")
    assert (await verify_token(after, new_token)).operator_id == "alice"
    assert [k["kid"] for k in (await after.jwks())["keys"]] == [second.kid]
    assert {k.kid: k.state for k in await after.keys()}[first.kid] == "expired"
    # Prune deletes only what is past verify_until.
    assert await store.prune() == 0
    assert await after.prune() == 1
    assert [k.kid for k in await store.keys()] == [second.kid]
    # The same with real time: the overlap ended (set as superuser), once the cache is dropped.
    third = await store.rotate(overlap=timedelta(minutes=5))
    await su.execute(
        "UPDATE fleet_signing_keys SET signing_until = now() - interval '2 min', "
        "verify_until = now() - interval '1 min' WHERE kid = $1",
        second.kid,
    )
    store.invalidate()
    await refused(store, new_token, "unknown or retired")
    assert [k["kid"] for k in (await store.jwks())["keys"]] == [third.kid]


async def test_rotation_rejects_negative_overlap(store: KeyStore) -> None:
    with pytest.raises(BadInputError) as err:
        await store.rotate(timedelta(seconds=-1))
    assert err.value.field == "overlap"


async def test_other_server_sees_rotation_when_its_cache_expires(
    db: Database, store: KeyStore, master: bytes
) -> None:
    ticks = [1000.0]
    other = KeyStore(db, master, cache_s=300, ticks=lambda: ticks[0])
    kid1, _ = await other.signer()
    assert kid1 == (await store.signer())[0]
    rotated = await store.rotate()
    assert (await store.signer())[0] == rotated.kid  # the rotating server switches at once
    ticks[0] += 299
    assert (await other.signer())[0] == kid1  # the other still uses its cache...
    ticks[0] += 1
    assert (await other.signer())[0] == rotated.kid  # ...until it expires, no restart
    assert len((await other.jwks())["keys"]) == 2


async def test_unknown_kid_reloads_at_most_once_per_interval(
    db: Database, store: KeyStore, master: bytes
) -> None:
    assert UNKNOWN_KID_RELOAD_S == 10.0
    await store.ensure_signing_key()
    other = KeyStore(db, master)  # default 300 s cache
    await other.jwks()
    assert other.loads == 1
    # A key minted elsewhere after our load is found by the one forced reload...
    rotated = await store.rotate()
    token = await issue_token(store, "bob", Tier.BUILDER)
    assert (await verify_token(other, token)).operator_id == "bob"
    assert other.loads == 2
    # ...and forged kids in the next 10 s cost no database read at all.
    for i in range(50):
        assert await other.verifier(f"forged-{i}") is None
    assert await verify_token(other, token)  # known kids still verify, from the cache
    assert other.loads == 2
    assert await other.verifier(rotated.kid) is not None


async def test_concurrent_ensure_makes_one_key(db: Database, master: bytes) -> None:
    stores = [KeyStore(db, master) for _ in range(6)]
    infos = await asyncio.gather(*(s.ensure_signing_key() for s in stores))
    assert len({i.kid for i in infos}) == 1
    assert len(await stores[0].keys()) == 1
    kids = await asyncio.gather(*(s.signer() for s in stores))
    assert {k for k, _ in kids} == {infos[0].kid}


async def test_concurrent_rotations_leave_one_signer(db: Database, master: bytes) -> None:
    stores = [KeyStore(db, master) for _ in range(4)]
    await stores[0].ensure_signing_key()
    await asyncio.gather(*(s.rotate() for s in stores))
    states = [k.state for k in await stores[0].keys()]
    assert states.count("signing") == 1 and states.count("verifying") == 4


# -- storage ------------------------------------------------------------------------------------


async def test_private_key_is_encrypted_at_rest(
    db: Database, store: KeyStore, master: bytes, su: asyncpg.Connection
) -> None:
    kid, private = await store.signer()
    pkcs8 = private.private_bytes(
        serialization.Encoding.DER,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    raw = private.private_numbers().private_value.to_bytes(32, "big")
    sealed = await su.fetchval("SELECT private_key_enc FROM fleet_signing_keys WHERE kid = $1", kid)
    assert len(sealed) == NONCE_BYTES + len(pkcs8) + 16  # nonce || ciphertext || GCM tag
    assert pkcs8 not in sealed and raw not in sealed and b"PRIVATE KEY" not in sealed
    jwk = await su.fetchval("SELECT public_jwk::text FROM fleet_signing_keys WHERE kid = $1", kid)
    assert '"d"' not in jwk
    # Another master key cannot use it.
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        await KeyStore(db, os.urandom(32)).signer()
    # A row moved under another kid does not decrypt either (the kid is authenticated).
    await su.execute("UPDATE fleet_signing_keys SET kid = 'moved' WHERE kid = $1", kid)
    with pytest.raises(ConfigError, match="cannot be decrypted"):
        await KeyStore(db, master).signer()


async def test_table_is_admin_only_and_checked(db: Database, store: KeyStore, su) -> None:
    await store.ensure_signing_key()
    async with db.tx(Tenant.operator("alice")) as conn:
        assert await conn.fetchval("SELECT count(*) FROM fleet_signing_keys") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO fleet_signing_keys (kid, public_jwk, private_key_enc) "
                "VALUES ('k', '{}', '\\x00')"
            )
    with pytest.raises(asyncpg.CheckViolationError) as err:
        await su.execute(
            "INSERT INTO fleet_signing_keys (kid, public_jwk, private_key_enc, signing_until, "
            "verify_until) VALUES ('k', '{}', '\\x00', now(), now() - interval '1 s')"
        )
    assert err.value.constraint_name == "valid_signing_key_window"
    with pytest.raises(asyncpg.UniqueViolationError):  # a second signer
        await su.execute(
            "INSERT INTO fleet_signing_keys (kid, public_jwk, private_key_enc) "
            "VALUES ('k', '{}', '\\x00')"
        )


# -- the master key -----------------------------------------------------------------------------


def test_master_key_file_created_private_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    key = KeyStore.load_master_key(settings)
    path = tmp_path / "data" / "keys" / "master.key"
    assert len(key) == 32 and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert KeyStore.load_master_key(settings) == key
    assert [p.name for p in path.parent.iterdir()] == ["master.key"]  # no temp files left


def test_master_key_file_readable_by_others_is_refused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    KeyStore.load_master_key(settings)
    path = tmp_path / "keys" / "master.key"
    for mode in (0o640, 0o604, 0o660):
        path.chmod(mode)
        with pytest.raises(
            ConfigError, match=rf"group or others.*chmod 600 {re.escape(str(path))}"
        ):
            KeyStore.load_master_key(settings)
    path.chmod(0o600)
    path.parent.chmod(0o770)
    with pytest.raises(ConfigError, match="writable by group or others"):
        KeyStore.load_master_key(settings)
    path.parent.chmod(0o700)
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="exactly 32 bytes"):
        KeyStore.load_master_key(settings)


def test_master_key_from_settings(tmp_path: Path) -> None:
    key = os.urandom(32)
    settings = Settings(data_dir=tmp_path, key_encryption_key=base64.b64encode(key).decode())
    assert KeyStore.load_master_key(settings) == key
    assert not (tmp_path / "keys").exists()
    assert "key_encryption_key" in settings.redacted()
    assert base64.b64encode(key).decode() not in json.dumps(settings.redacted())
    for bad in (base64.b64encode(os.urandom(16)).decode(), "not base64 !!", ""):
        with pytest.raises(ConfigError, match=r"key_encryption_key.*FLEET_KEY_ENCRYPTION_KEY"):
            KeyStore.load_master_key(Settings(data_dir=tmp_path, key_encryption_key=bad))


# -- the command line ---------------------------------------------------------------------------


async def test_cli_token_issue_and_keys(pg: Pg, db: Database) -> None:
    store = KeyStore(db, KeyStore.load_master_key(pg.settings))
    result = await asyncio.to_thread(
        fleet, "token", "issue", "--operator", "bob", "--tier", "builder", "--ttl", "30m"
    )
    assert result.returncode == 0, result.stderr
    got = await verify_token(store, result.stdout.strip())
    assert (got.operator_id, got.tier) == ("bob", Tier.BUILDER)
    assert got.expires_at - got.issued_at == timedelta(minutes=30)
    rotated = await asyncio.to_thread(fleet, "keys", "rotate", "--overlap", "2h", "--json")
    assert rotated.returncode == 0, rotated.stderr
    new_kid = json.loads(rotated.stdout)["signing"]["kid"]
    listed = await asyncio.to_thread(fleet, "keys", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    keys = json.loads(listed.stdout)
    assert (keys[0]["kid"], keys[0]["state"]) == (new_kid, "signing")
    assert sorted(k["state"] for k in keys) == ["signing", "verifying"]
    text = await asyncio.to_thread(fleet, "keys", "list")
    assert new_kid in text.stdout and "verifying" in text.stdout
    store.invalidate()
    assert await verify_token(store, result.stdout.strip())  # old key, inside the overlap


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("token", "issue", "--operator", "bob", "--tier", "builder", "--ttl", "soon"), 2, "--ttl"),
        (("token", "issue", "--operator", "bob", "--tier", "builder", "--ttl", "31d"), 2, "--ttl"),
        (("token", "issue", "--operator", "bob", "--tier", "builder", "--ttl", "10s"), 2, "--ttl"),
        (("token", "issue", "--operator", "b b", "--tier", "builder"), 2, "--operator"),
        (("keys", "rotate", "--overlap", "1w"), 2, "--overlap"),
        (("token", "issue", "--operator", "bob", "--tier", "king"), 2, "--tier"),
    ],
)
def test_cli_bad_input_exits_2(pg: Pg, args: tuple[str, ...], code: int, needle: str) -> None:
    result = fleet(*args)
    assert result.returncode == code, result.stderr
    assert needle in result.stderr and result.stdout == ""


def test_cli_needs_the_admin_tier(pg: Pg) -> None:
    result = fleet("keys", "list", FLEET_TIER="builder")
    assert result.returncode == 4 and "sovereign" in result.stderr
