"""Password authentication for the embedded cluster: every role logs in with its own SCRAM
password, and pg_hba.conf allows nothing else (never `trust`).

The passwords live in one pgpass file beside the cluster (0600, owned by the user fleet runs
as; never inside an agent's reach), named in the cluster's DSNs as `passfile=` so that asyncpg
and psql find them. A cluster made before this (trust) is upgraded at start: the roles get
their passwords while trust still lets the superuser in, then pg_hba.conf is rewritten and the
server reloaded.
"""

from __future__ import annotations

import os
import secrets
import socket
import struct
import time
from pathlib import Path

from fleet_core.db.sysuser import RunAs
from fleet_core.errors import DatabaseError

PASSFILE = "pgpass"
HBA = """\
# Written by fleet: the cluster listens on its private Unix socket only, and every role
# authenticates with its password (SCRAM); the passwords are in the pgpass file beside the
# cluster. Never `trust`: anything that reaches the socket would be the superuser.
local   all             all                                     scram-sha-256
local   replication     all                                     scram-sha-256
"""


def load_or_create(path: Path, roles: tuple[str, ...]) -> dict[str, str]:
    """The role → password map of the pgpass file at `path`, creating the file (and any role
    missing from it) with random passwords. Call it under the cluster's lock."""
    found: dict[str, str] = {}
    if path.exists():
        st = path.stat()
        if st.st_uid != os.geteuid():
            raise DatabaseError(f"{path} belongs to another user; refusing to use it")
        if st.st_mode & 0o077:
            os.chmod(path, 0o600)  # asyncpg and libpq ignore a file others may read
        for line in path.read_text().splitlines():
            fields = line.split(":")
            if len(fields) == 5 and not line.startswith("#"):
                found[fields[3]] = fields[4]
    if all(role in found for role in roles):
        return found
    for role in roles:
        found.setdefault(role, secrets.token_urlsafe(32))  # [A-Za-z0-9_-]: no escaping
    body = "".join(f"*:*:*:{role}:{password}\n" for role, password in found.items())
    _write_private(path, body, owner=None)
    return found


def write_pwfile(path: Path, password: str, run_as: RunAs) -> None:
    """The superuser's password for initdb (--pwfile), readable by the server's user only."""
    _write_private(path, password + "\n", owner=run_as)


def hba_is_current(pgdata: Path) -> bool:
    try:
        return (pgdata / "pg_hba.conf").read_text() == HBA
    except OSError:
        return False


def write_hba(pgdata: Path, run_as: RunAs) -> None:
    _write_private(pgdata / "pg_hba.conf", HBA, owner=run_as)


def wait_until_asked(socket_path: Path, user: str, timeout: float = 10.0) -> None:
    """Block until the server asks `user` for a password (a reload is applied asynchronously)."""
    deadline = time.monotonic() + timeout
    while lets_in_without_password(socket_path, user) is not False:
        if time.monotonic() > deadline:
            raise DatabaseError(f"the server at {socket_path} still lets {user} in without "
                                "a password after reloading pg_hba.conf")  # fmt: skip
        time.sleep(0.05)


def lets_in_without_password(socket_path: Path, user: str) -> bool | None:
    """Whether the server answers a startup message for `user` with AuthenticationOk (trust);
    None when it cannot be asked. Speaks just the first exchange of the wire protocol."""
    params = b"user\0" + user.encode() + b"\0database\0postgres\0\0"
    body = struct.pack("!I", 196608) + params  # protocol 3.0
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(5.0)
            s.connect(str(socket_path))
            s.sendall(struct.pack("!I", len(body) + 4) + body)
            head = _recv(s, 9)
    except OSError:
        return None
    if head[:1] != b"R":
        return False  # an error: refused, not let in
    code: int = struct.unpack("!I", head[5:9])[0]
    return code == 0


def _recv(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def _write_private(path: Path, body: str, *, owner: RunAs | None) -> None:
    """A 0600 file written whole (temp file, then rename), owned by `owner` when it is
    another user than ours (the server's user, when fleet runs as root)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(body)
        if owner is not None and owner.is_other:
            assert owner.uid is not None and owner.gid is not None
            os.chown(tmp, owner.uid, owner.gid)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
