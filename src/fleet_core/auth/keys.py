"""The ES256 signing keys of the engine: stored encrypted in PostgreSQL, rotated with an overlap.

Exactly one key signs. On rotation it stops signing at once and keeps verifying until the end
of the overlap, so tokens it signed stay valid that long. Each server caches the keys for at
most `cache_s`, so a rotation made elsewhere is seen without a restart; an unknown kid forces
at most one reload per UNKNOWN_KID_RELOAD_S, so forged kids cannot hammer the database.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fleet_core.auth.master import KEY_BYTES, MASTER_KEY_ENV, master_key_file
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import BadInputError, ConfigError

if TYPE_CHECKING:
    from fleet_core.config import Settings
    from fleet_core.db.database import Conn

NONCE_BYTES = 12
LOCK_NAMESPACE = 0x464C54  # "FLT", shared with the migration lock (key 1)
KEYS_LOCK_KEY = 2
UNKNOWN_KID_RELOAD_S = 10.0
INFO_COLUMNS = "kid, created_at, not_before, signing_until, verify_until"
KeyState = Literal["signing", "verifying", "expired"]


@dataclass(frozen=True)
class KeyInfo:
    kid: str
    created_at: datetime
    not_before: datetime
    signing_until: datetime | None
    verify_until: datetime | None
    state: KeyState


@dataclass(frozen=True)
class _Key:
    info: KeyInfo
    public_jwk: dict[str, Any]
    public_key: ec.EllipticCurvePublicKey
    sealed: bytes  # nonce || AES-256-GCM(PKCS8), the kid as associated data


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_int(value: str) -> int:
    return int.from_bytes(base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)), "big")


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638: SHA-256 over the canonical JSON of the required EC members, base64url."""
    members = {k: jwk[k] for k in ("crv", "kty", "x", "y")}
    canon = json.dumps(members, separators=(",", ":"), sort_keys=True)
    return _b64url(hashlib.sha256(canon.encode("ascii")).digest())


def public_jwk(key: ec.EllipticCurvePublicKey) -> dict[str, Any]:
    """The public JWK with kid (its thumbprint), alg ES256 and use sig."""
    numbers = key.public_numbers()
    jwk: dict[str, Any] = {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }
    return {**jwk, "kid": thumbprint(jwk), "alg": "ES256", "use": "sig"}


def _public_key(jwk: dict[str, Any]) -> ec.EllipticCurvePublicKey:
    x, y = _b64url_int(jwk["x"]), _b64url_int(jwk["y"])
    return ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()


def _state(
    signing_until: datetime | None, verify_until: datetime | None, now: datetime
) -> KeyState:
    if signing_until is None or signing_until > now:
        return "signing"
    if verify_until is None or verify_until > now:
        return "verifying"
    return "expired"


def _info(row: Any, now: datetime) -> KeyInfo:
    signing_until, verify_until = row["signing_until"], row["verify_until"]
    return KeyInfo(
        row["kid"], row["created_at"], row["not_before"], signing_until, verify_until,
        _state(signing_until, verify_until, now),
    )  # fmt: skip


class KeyStore:
    """The engine's signing keys. Every query goes through `db.tx(Tenant.admin())`."""

    def __init__(
        self,
        db: Database,
        master_key: bytes,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        cache_s: float = 300.0,
        ticks: Callable[[], float] = time.monotonic,  # the cache's clock
    ) -> None:
        if len(master_key) != KEY_BYTES:
            raise ConfigError(f"the key encryption key must be {KEY_BYTES} bytes")
        self.db = db
        self.clock = clock
        self.cache_s = cache_s
        self._ticks = ticks
        self.loads = 0  # how many times the keys were read from the database
        self._aead = AESGCM(master_key)
        self._keys: dict[str, _Key] = {}
        self._loaded_at: float | None = None
        self._forced_at: float | None = None
        self._private: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def load_master_key(cls, settings: Settings) -> bytes:
        """FLEET_KEY_ENCRYPTION_KEY (base64 of 32 bytes), else `<data_dir>/keys/master.key`,
        created with 32 random bytes (mode 0600, in a 0700 directory) when missing."""
        if settings.key_encryption_key is None:
            return master_key_file(settings.data_dir / "keys")
        raw = settings.key_encryption_key.get_secret_value().strip()
        try:
            key = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            key = b""
        if len(key) != KEY_BYTES:
            raise ConfigError(
                f"config error: key_encryption_key (from {MASTER_KEY_ENV}): must be the base64 "
                f"of exactly {KEY_BYTES} bytes (e.g. `openssl rand -base64 32`)"
            )
        return key

    # -- writes --------------------------------------------------------------------------------

    async def _insert_key(self, conn: Conn, now: datetime) -> KeyInfo:
        private = ec.generate_private_key(ec.SECP256R1())
        jwk = public_jwk(private.public_key())
        pkcs8 = private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, pkcs8, jwk["kid"].encode("ascii"))
        row = await conn.fetchrow(
            "INSERT INTO fleet_signing_keys (kid, public_jwk, private_key_enc, created_at, "
            f"not_before) VALUES ($1, $2, $3, $4, $4) RETURNING {INFO_COLUMNS}",
            jwk["kid"], jwk, sealed, now,
        )  # fmt: skip
        return _info(row, now)

    @staticmethod
    async def _lock_keys(conn: Conn) -> None:
        """Serialises key creation and rotation across processes, to the end of the tx."""
        await conn.execute("SELECT pg_advisory_xact_lock($1, $2)", LOCK_NAMESPACE, KEYS_LOCK_KEY)

    async def ensure_signing_key(self) -> KeyInfo:
        """The current signing key, created first if there is none (one, whoever races)."""
        now = self.clock()
        async with self.db.tx(Tenant.admin()) as conn:
            await self._lock_keys(conn)
            row = await conn.fetchrow(
                f"SELECT {INFO_COLUMNS} FROM fleet_signing_keys WHERE signing_until IS NULL"
            )
            if row is not None:
                return _info(row, now)
            info = await self._insert_key(conn, now)
        self.invalidate()
        return info

    async def rotate(self, overlap: timedelta = timedelta(hours=24)) -> KeyInfo:
        """A new signing key; the previous one stops signing now and verifies until now+overlap."""
        if overlap < timedelta(0):
            raise BadInputError("overlap", "must not be negative")
        now = self.clock()
        async with self.db.tx(Tenant.admin()) as conn:
            await self._lock_keys(conn)
            await conn.execute(
                "UPDATE fleet_signing_keys SET signing_until = $1, verify_until = $2 "
                "WHERE signing_until IS NULL",
                now, now + overlap,
            )  # fmt: skip
            info = await self._insert_key(conn, now)
        self.invalidate()
        return info

    async def prune(self) -> int:
        """Delete the keys past verify_until; returns how many."""
        async with self.db.tx(Tenant.admin()) as conn:
            status = await conn.execute(
                "DELETE FROM fleet_signing_keys "
                "WHERE verify_until IS NOT NULL AND verify_until <= $1",
                self.clock(),
            )
        self.invalidate()
        return int(status.rsplit(" ", 1)[-1])

    # -- reads ---------------------------------------------------------------------------------

    async def keys(self) -> list[KeyInfo]:
        """Every stored key, newest first, read from the database (not the cache)."""
        return [k.info for k in await self._fetch()]

    async def jwks(self) -> dict[str, Any]:
        """{"keys": [...]}: the public JWK of every key still valid for verification."""
        now = self.clock()
        keys = (await self._cached()).values()
        return {"keys": [dict(k.public_jwk) for k in keys if self._verifies(k, now)]}

    async def signer(self) -> tuple[str, ec.EllipticCurvePrivateKey]:
        """(kid, private key) of the current signing key, creating the first key if needed."""
        key = self._signing(await self._cached())
        if key is None:
            await self.ensure_signing_key()
            key = self._signing(await self._cached())
        if key is None:
            raise ConfigError("no signing key could be loaded")
        kid = key.info.kid
        if kid not in self._private:
            self._private[kid] = self._decrypt(key)
        return kid, self._private[kid]

    async def verifier(self, kid: str) -> ec.EllipticCurvePublicKey | None:
        """The public key for `kid` if it may verify now, else None."""
        key = (await self._cached()).get(kid)
        if key is None and self._may_force():
            self._forced_at = self._ticks()
            async with self._lock:
                await self._reload()
            key = self._keys.get(kid)
        if key is None or not self._verifies(key, self.clock()):
            return None
        return key.public_key

    def invalidate(self) -> None:
        """Drop the cache: the next read goes to the database."""
        self._loaded_at = None

    # -- internals -----------------------------------------------------------------------------

    @staticmethod
    def _verifies(key: _Key, now: datetime) -> bool:
        return _state(key.info.signing_until, key.info.verify_until, now) != "expired"

    def _signing(self, keys: dict[str, _Key]) -> _Key | None:
        now = self.clock()
        live = [
            k
            for k in keys.values()
            if k.info.not_before <= now and _state(k.info.signing_until, None, now) == "signing"
        ]
        return max(live, key=lambda k: k.info.created_at, default=None)

    def _may_force(self) -> bool:
        return self._forced_at is None or self._ticks() - self._forced_at >= UNKNOWN_KID_RELOAD_S

    def _stale(self) -> bool:
        return self._loaded_at is None or self._ticks() - self._loaded_at >= self.cache_s

    async def _cached(self) -> dict[str, _Key]:
        if self._stale():
            async with self._lock:
                if self._stale():  # another caller may have loaded while this one waited
                    await self._reload()
        return self._keys

    async def _reload(self) -> None:
        self._keys = {k.info.kid: k for k in await self._fetch()}
        self._loaded_at = self._ticks()
        self._private = {kid: p for kid, p in self._private.items() if kid in self._keys}

    async def _fetch(self) -> list[_Key]:
        async with self.db.tx(Tenant.admin()) as conn:
            rows = await conn.fetch(
                f"SELECT {INFO_COLUMNS}, public_jwk, private_key_enc FROM fleet_signing_keys "
                "ORDER BY created_at DESC, kid"
            )
        self.loads += 1
        now = self.clock()
        out = []
        for r in rows:
            jwk = dict(r["public_jwk"])
            out.append(_Key(_info(r, now), jwk, _public_key(jwk), bytes(r["private_key_enc"])))
        return out

    def _decrypt(self, key: _Key) -> ec.EllipticCurvePrivateKey:
        nonce, body = key.sealed[:NONCE_BYTES], key.sealed[NONCE_BYTES:]
        try:
            pkcs8 = self._aead.decrypt(nonce, body, key.info.kid.encode("ascii"))
        except InvalidTag:
            raise ConfigError(
                f"signing key {key.info.kid} cannot be decrypted with this key encryption key "
                f"({MASTER_KEY_ENV} or <data_dir>/keys/master.key): is it the one the keys "
                "were created with?"
            ) from None
        private = serialization.load_der_private_key(pkcs8, password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise ConfigError(f"signing key {key.info.kid} is not an EC key")
        return private
