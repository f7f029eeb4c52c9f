"""Finished agents' tmux sessions: their output reaches the log file, then they go.

remain-on-exit keeps an ended agent's pane (dead) so that its exit status and last screen stay
readable; once the task's log file (agent_log, fed by pipe-pane from the first byte) holds the
launcher's last line, the pane holds nothing the file does not, and the session is removed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fleet_core.runtime import agent_log
from fleet_core.runtime.tmux import Tmux

SETTLE_S = 1.0  # how long an ended agent's last output may take to reach its log file
SETTLE_POLL_S = 0.01
EXITING_S = 2.0  # how long a launcher that woke the engine may take to end its pane


async def output_settled(log_path: Path, timeout: float = SETTLE_S) -> bool:
    """Wait (bounded) until the log file holds the launcher's last line; False when it did
    not come in time or there is no log file (then the output is read as it is)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while True:
        ended = await asyncio.to_thread(agent_log.attempt_ended, log_path)
        if ended is None:
            return False
        if ended:
            return True
        if loop.time() >= end:
            return False
        await asyncio.sleep(SETTLE_POLL_S)


async def remove_finished(
    tmux: Tmux, name: str, log_path: Path, *, force: bool = False, wait_s: float = 0.0
) -> bool:
    """Remove the session `name` if its pane is dead (waiting up to `wait_s` for a launcher
    that is exiting) and its output is kept in `log_path` (with `force`, also without the
    launcher's last line there). True when removed."""
    loop = asyncio.get_running_loop()
    end = loop.time() + wait_s
    while True:
        pane = await tmux.pane(name)
        if pane is None or pane.dead or loop.time() >= end:
            break
        await asyncio.sleep(SETTLE_POLL_S)
    if pane is None or not pane.dead:
        return False
    kept = await asyncio.to_thread(agent_log.attempt_ended, log_path)
    if kept is None or not (kept or force):
        return False  # no log file: the pane holds the only copy of the output
    return await tmux.kill_session(name)
