"""The master key that encrypts the signing keys and the operators' secrets at rest: its
file in the data dir (when FLEET_KEY_ENCRYPTION_KEY is unset) and its fingerprint, stored in
the database at first use so that an engine holding another key is refused at start."""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fleet_core.db.database import Database, Tenant
from fleet_core.errors import ConfigError

if TYPE_CHECKING:
    from fleet_core.config import Settings
    from fleet_core.db.database import Conn

KEY_BYTES = 32
NONCE_BYTES = 12
MASTER_KEY_ENV = "FLEET_KEY_ENCRYPTION_KEY"
FILE_NAME = "master.key"
FINGERPRINT_LABEL = b"fleet master key fingerprint\0"


def fingerprint(key: bytes) -> str:
    """16 hex digits of SHA-256 over a label and the key: names a key without revealing it."""
    return hashlib.sha256(FINGERPRINT_LABEL + key).hexdigest()[:16]


def master_key_source(settings: Settings) -> str:
    """Where `KeyStore.load_master_key(settings)` takes the key from, for messages."""
    if settings.key_encryption_key is not None:
        return MASTER_KEY_ENV
    return str(settings.data_dir / "keys" / FILE_NAME)


def secret_aad(operator_id: str, name: str) -> bytes:
    """Associated data of an operator's secret: the row opens only as that operator and name."""
    return f"{operator_id}\0{name}".encode()


async def check_master_key(db: Database, key: bytes, source: str) -> str:
    """Refuse `key` unless it is the one the database's encrypted data was made with.

    The first engine (or `fleet secrets set`) to get here stores the key's fingerprint, after
    checking that whatever is already encrypted (a signing key, a secret) opens with it; every
    later one compares. `source` says where the key came from, for the error. Returns the
    fingerprint."""
    mine = fingerprint(key)
    async with db.tx(Tenant.admin()) as conn:
        stored = await conn.fetchval("SELECT fingerprint FROM fleet_master_key")
        if stored is None and await _opens_existing(conn, key):
            await conn.execute(
                "INSERT INTO fleet_master_key (fingerprint) VALUES ($1) "
                "ON CONFLICT (id) DO NOTHING",
                mine,
            )
            stored = await conn.fetchval("SELECT fingerprint FROM fleet_master_key")
    if stored != mine:
        theirs = f"fingerprint {stored}" if stored else "whose data does not decrypt with it"
        raise ConfigError(
            f"config error: {MASTER_KEY_ENV}: the master key from {source} (fingerprint {mine}) "
            f"is not the one this database's secrets and signing keys were encrypted with "
            f"({theirs}); every host sharing the database needs the same {MASTER_KEY_ENV}"
        )
    return mine


async def _opens_existing(conn: Conn, key: bytes) -> bool:
    """Before a fingerprint is stored (a database from before fingerprints): does `key` open
    the newest signing key and the newest secret, where there are any?"""
    aead = AESGCM(key)
    row = await conn.fetchrow(
        "SELECT kid, private_key_enc FROM fleet_signing_keys ORDER BY created_at DESC LIMIT 1"
    )
    sealed = [] if row is None else [(bytes(row["private_key_enc"]), row["kid"].encode())]
    row = await conn.fetchrow(
        "SELECT operator_id, name, nonce, ciphertext FROM fleet_secrets "
        "ORDER BY updated_at DESC LIMIT 1"
    )
    if row is not None:
        aad = secret_aad(row["operator_id"], row["name"])
        sealed.append((bytes(row["nonce"]) + bytes(row["ciphertext"]), aad))
    for blob, aad in sealed:
        try:
            aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            return False
    return True


def master_key_file(directory: Path) -> bytes:
    """`directory/master.key`: 32 random bytes, created 0600 in a 0700 directory if missing.
    A file accessible to group or others, or a directory they can write, is refused."""
    path = directory / FILE_NAME
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask
    mode = stat.S_IMODE(directory.stat().st_mode)
    if mode & 0o022:
        raise ConfigError(
            f"{directory} is writable by group or others (mode {mode:o}); it holds the key "
            f"that encrypts the signing keys: run `chmod 700 {directory}` "
            f"(or set {MASTER_KEY_ENV})"
        )
    if not path.exists():
        _create(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path} is accessible by group or others (mode {mode:o}); it holds the key "
                f"that encrypts the signing keys: run `chmod 600 {path}`"
            )
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise ConfigError(f"{path} must hold exactly {KEY_BYTES} bytes, found {len(key)}")
    return key


def _create(path: Path) -> None:
    """Write a new key to a private temporary file, then link it into place: whoever links
    first wins and every racer reads that one."""
    tmp = path.with_name(f".{FILE_NAME}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, secrets.token_bytes(KEY_BYTES))
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
