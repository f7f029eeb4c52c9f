"""Stopping the engine's long-lived asyncio tasks for sure.

On Python 3.11, `asyncio.wait_for` can swallow a cancellation that arrives as its inner
awaitable completes (fixed in 3.12): the cancelled task then carries on, and whoever awaited it
after `cancel()` waits forever. Seen in CI: a monitor whose cycle swallowed its stop, then
slept to its next cycle, and the engine never stopped. `stop_task` cancels again until the
task has ended; the loops also use `asyncio.timeout`, which counts cancellations right.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_S = 1.0


async def stop_task(task: asyncio.Task[Any] | None, *, every_s: float = RECANCEL_S) -> None:
    """Cancel `task` and wait until it has ended, cancelling it again every `every_s` while
    it goes on; what it raised on the way out is logged, not raised. The caller's own
    cancellation still propagates."""
    if task is None:
        return
    tries = 0
    while not task.done():
        task.cancel()
        tries += 1
        await asyncio.wait({task}, timeout=every_s)
    if tries > 1:
        log.warning("task %s needed %d cancellations to stop", task.get_name(), tries)
    if not task.cancelled() and task.exception() is not None:
        log.warning("task %s ended with %r while stopping", task.get_name(), task.exception())
