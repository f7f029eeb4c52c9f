"""Every process's `/proc/<pid>/stat`, read once each: for the monitor's CPU table
(progress.py) and for whether a process group still has a live member (groups.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator


def stat_fields() -> Iterator[tuple[int, list[bytes]]]:
    """(pid, the stat fields after its `(comm)`: state, ppid, pgrp, ...) of every process
    readable now; one that ends meanwhile is left out. OSError when /proc cannot be listed."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                stat = fh.read()
        except OSError:
            continue  # gone meanwhile
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses.
        yield int(name), stat[stat.rfind(b")") + 2 :].split()
