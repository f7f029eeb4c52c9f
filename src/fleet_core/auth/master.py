"""The key that encrypts the signing keys at rest, when it lives in a file of the data dir."""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from fleet_core.errors import ConfigError

KEY_BYTES = 32
MASTER_KEY_ENV = "FLEET_KEY_ENCRYPTION_KEY"
FILE_NAME = "master.key"


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
