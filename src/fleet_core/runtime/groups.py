"""Ending an agent's process group: SIGTERM, a grace period, SIGKILL; a group of zombies
counts as ended (orphans wait for a PID 1 that may never reap them)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time

from fleet_core.runtime.procfs import stat_fields


async def terminate_group(pid: int, grace_s: float) -> bool:
    """SIGTERM the process group, SIGKILL it after the grace period; True if it had to.

    A group whose members are all zombies has ended: they wait only for a parent to reap them
    (orphans go to PID 1, which in a container may never do so), so neither the grace nor the
    SIGKILL wait for them."""
    try:
        pgid = os.getpgid(pid)
    except ProcessLookupError:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not await group_running(pgid):
            return False
        await asyncio.sleep(0.05)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        return False
    for _ in range(100):  # wait for the group to be gone, so its exit is final
        if not await group_running(pgid):
            break
        await asyncio.sleep(0.01)
    return True


async def group_running(pgid: int) -> bool:
    """Whether a process of the group is alive (not a zombie)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False  # no member at all: the usual case, without reading /proc
    return await asyncio.to_thread(live_members, pgid)


def live_members(pgid: int) -> bool:
    """Any member of the group not a zombie, from /proc (where there is none: assume so)."""
    found = False
    try:
        for _pid, fields in stat_fields():
            found = True
            if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
                return True
    except OSError:
        return True
    return not found  # an unreadable /proc says nothing: assume the group still runs
