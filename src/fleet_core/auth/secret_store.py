"""Each operator's secrets for their agents, encrypted in the database with the master key.

A value is sealed with AES-256-GCM (a fresh 12-byte nonce each time, "operator NUL name" as
associated data) and only ever leaves this module toward an agent's env file. Reading names
and times, or deleting, never needs the key; the first encryption or decryption of a store
loads the key (in a thread: it may create the key file) and checks its fingerprint against
the database's (`check_master_key`), so every engine sharing the database reads the same
values or refuses to start.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fleet_core.auth.keys import KeyStore
from fleet_core.auth.master import (
    KEY_BYTES,
    MASTER_KEY_ENV,
    NONCE_BYTES,
    check_master_key,
    master_key_source,
    secret_aad,
)
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import EXIT_NOT_FOUND, BadInputError, ConfigError, FleetError

if TYPE_CHECKING:
    from fleet_core.config import Settings

NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]{0,127}$")
# Set by the launcher (its base environment) or by fleet itself: never an operator's secret.
RESERVED_NAMES = frozenset({
    "PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "TMPDIR", "TZ", "LANG", "COLORTERM",
    "PWD", "OLDPWD", "SHLVL", "IFS", "ENV", "BASH_ENV", "CDPATH", "PS4", "PYTHONPATH",
    "PYTHONHOME", "PYTHONSTARTUP", "NODE_OPTIONS", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM",
    "GIT_DIR", "GIT_WORK_TREE", "TMUX", "TMUX_PANE",
})  # fmt: skip
RESERVED_PREFIXES = ("FLEET_", "LD_", "LC_", "BASH_FUNC_", "DYLD_", "GIT_CONFIG_")
MAX_VALUE_BYTES = 32 * 1024


class SecretNotFoundError(FleetError):
    exit_code = EXIT_NOT_FOUND
    code = "not_found"


@dataclass(frozen=True)
class SecretInfo:
    """A stored secret without its value."""

    name: str
    set_at: datetime  # first set
    updated_at: datetime  # last set


def validate_name(name: str, field: str = "name") -> str:
    if not NAME_RE.match(name):
        raise BadInputError(
            field,
            f"{name[:40]!r} is not a variable name (A-Z, 0-9 and _, not starting with a digit, "
            "at most 128 characters)",
        )
    if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
        raise BadInputError(
            field, f"{name} is set by fleet or the launcher, not by a secret (reserved)"
        )
    return name


def validate_value(value: str, field: str = "value") -> str:
    if not value:
        raise BadInputError(field, "is empty")
    if "\0" in value:
        raise BadInputError(field, "must not contain a NUL character")
    if len(value.encode()) > MAX_VALUE_BYTES:
        raise BadInputError(field, f"is longer than {MAX_VALUE_BYTES} bytes")
    return value


def _info(row: Any) -> SecretInfo:
    return SecretInfo(row["name"], row["set_at"], row["updated_at"])


class SecretStore:
    """The operators' secrets. Every query runs as the operator (row-level security)."""

    def __init__(self, db: Database, master_key: Callable[[], bytes], source: str) -> None:
        """`master_key` loads the key when it is first needed; `source` names where it comes
        from (FLEET_KEY_ENCRYPTION_KEY or the key file), for errors."""
        self.db = db
        self._load_key = master_key
        self.source = source
        self._aead: AESGCM | None = None
        self._lock = asyncio.Lock()

    @classmethod
    def for_settings(cls, settings: Settings, db: Database) -> SecretStore:
        """The store with the engine's master key (FLEET_KEY_ENCRYPTION_KEY, else the key file
        of the data dir), loaded when first needed."""
        return cls(db, lambda: KeyStore.load_master_key(settings), master_key_source(settings))

    async def ready(self) -> None:
        """Load the master key and check it against the database's fingerprint now (an
        engine does this at start: a wrong key is refused before any agent runs)."""
        await self._cipher()

    async def _cipher(self) -> AESGCM:
        async with self._lock:
            if self._aead is None:
                key = await asyncio.to_thread(self._load_key)
                if len(key) != KEY_BYTES:
                    raise ConfigError(f"the key encryption key must be {KEY_BYTES} bytes")
                await check_master_key(self.db, key, self.source)
                self._aead = AESGCM(key)
            return self._aead

    async def seal(self, aad: bytes, plain: str) -> bytes:
        """`plain` encrypted with the master key: nonce || ciphertext, bound to `aad` (other
        stores of the engine, e.g. notification channels, keep their secrets this way)."""
        nonce = secrets.token_bytes(NONCE_BYTES)
        return nonce + (await self._cipher()).encrypt(nonce, plain.encode(), aad)

    async def unseal(self, aad: bytes, blob: bytes, what: str) -> str:
        """The inverse of `seal`; `what` names the value in the error when it does not open."""
        aead = await self._cipher()
        try:
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad).decode()
        except InvalidTag:
            raise ConfigError(
                f"config error: {MASTER_KEY_ENV}: {what} does not decrypt with the master key "
                f"from {self.source}"
            ) from None

    async def set(self, operator_id: str, name: str, value: str) -> tuple[SecretInfo, bool]:
        """Store (or replace) a secret; returns it and whether it is new."""
        validate_name(name)
        validate_value(value)
        tenant = Tenant.operator(operator_id)
        aead = await self._cipher()
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = aead.encrypt(nonce, value.encode(), secret_aad(operator_id, name))
        async with self.db.tx(tenant) as conn:
            row = await conn.fetchrow(
                "INSERT INTO fleet_secrets (operator_id, name, nonce, ciphertext) "
                "VALUES ($1, $2, $3, $4) ON CONFLICT (operator_id, name) DO UPDATE "
                "SET nonce = EXCLUDED.nonce, ciphertext = EXCLUDED.ciphertext "
                "RETURNING name, set_at, updated_at, (xmax = 0) AS created",
                operator_id, name, nonce, sealed,
            )  # fmt: skip
        assert row is not None
        return _info(row), bool(row["created"])

    async def unset(self, operator_id: str, name: str) -> SecretInfo:
        """Delete a secret; SecretNotFoundError when the operator has none by that name."""
        validate_name(name)
        async with self.db.tx(Tenant.operator(operator_id)) as conn:
            row = await conn.fetchrow(
                "DELETE FROM fleet_secrets WHERE operator_id = $1 AND name = $2 "
                "RETURNING name, set_at, updated_at",
                operator_id, name,
            )  # fmt: skip
        if row is None:
            raise SecretNotFoundError(f"no secret {name} is set for {operator_id}")
        return _info(row)

    async def entries(self, operator_id: str) -> list[SecretInfo]:
        """The operator's secrets by name, without values."""
        async with self.db.tx(Tenant.operator(operator_id)) as conn:
            rows = await conn.fetch(
                "SELECT name, set_at, updated_at FROM fleet_secrets WHERE operator_id = $1 "
                "ORDER BY name",
                operator_id,
            )
        return [_info(r) for r in rows]

    async def values(self, operator_id: str, names: Iterable[str]) -> dict[str, str]:
        """The decrypted values of those of `names` the operator has set (the key is loaded
        only when there is something to decrypt)."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        async with self.db.tx(Tenant.operator(operator_id)) as conn:
            rows = await conn.fetch(
                "SELECT name, nonce, ciphertext FROM fleet_secrets "
                "WHERE operator_id = $1 AND name = ANY($2::text[])",
                operator_id, wanted,
            )  # fmt: skip
        if not rows:
            return {}
        aead = await self._cipher()
        out: dict[str, str] = {}
        for r in rows:
            try:
                plain = aead.decrypt(
                    bytes(r["nonce"]), bytes(r["ciphertext"]), secret_aad(operator_id, r["name"])
                )
            except InvalidTag:
                raise ConfigError(
                    f"config error: {MASTER_KEY_ENV}: secret {r['name']} of {operator_id} does "
                    f"not decrypt with the master key from {self.source}"
                ) from None
            out[r["name"]] = plain.decode()
        return out
