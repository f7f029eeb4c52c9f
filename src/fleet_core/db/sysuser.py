"""The unprivileged system user that runs the embedded cluster when fleet runs as root."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass
from typing import Any

from fleet_core.errors import DatabaseError


@dataclass(frozen=True)
class RunAs:
    """Who runs initdb/postgres: None fields mean the current user."""

    user: str | None = None
    uid: int | None = None
    gid: int | None = None

    @property
    def is_other(self) -> bool:
        return self.user is not None

    def subprocess_kwargs(self) -> dict[str, Any]:
        if not self.is_other:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def running_as_root() -> bool:
    return os.geteuid() == 0


def ensure_system_user(name: str) -> RunAs:
    """Return the user `name`, creating it as a system account without a home if missing."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        useradd = shutil.which("useradd") or "/usr/sbin/useradd"
        nologin = shutil.which("nologin") or "/usr/sbin/nologin"
        try:
            subprocess.run(
                [useradd, "--system", "--no-create-home", "--shell", nologin, name],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            # Another process may have created it at the same moment.
            try:
                entry = pwd.getpwnam(name)
            except KeyError:
                raise DatabaseError(
                    f"running as root, PostgreSQL needs an unprivileged user; creating "
                    f"{name!r} failed: {detail.strip()}"
                ) from None
        else:
            entry = pwd.getpwnam(name)
    if entry.pw_uid == 0:
        raise DatabaseError(f"FLEET_PG_USER={name} is root; PostgreSQL refuses to run as root")
    grp.getgrgid(entry.pw_gid)  # the primary group must exist
    return RunAs(user=name, uid=entry.pw_uid, gid=entry.pw_gid)


def current_user() -> RunAs:
    return RunAs()
