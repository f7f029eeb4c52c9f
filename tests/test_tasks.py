"""stop_task: a task that swallows its cancellation (as asyncio.wait_for can on Python 3.11
when its inner awaitable completes at the same moment) is still stopped."""

from __future__ import annotations

import asyncio
import logging

import pytest

from fleet_core.tasks import stop_task


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed == 2:
                    raise
                swallowed += 1  # carries on, as a loop whose wait_for lost the cancel

    task = asyncio.create_task(stubborn(), name="stubborn")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="fleet_core.tasks"):
        await stop_task(task, every_s=0.05)
    assert task.cancelled() and swallowed == 2
    assert "stubborn needed 3 cancellations" in caplog.text


async def test_an_ended_or_missing_task_is_fine_and_a_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    await stop_task(None)

    async def fails_on_the_way_out() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            raise RuntimeError("cleanup broke")

    task = asyncio.create_task(fails_on_the_way_out(), name="messy")
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="fleet_core.tasks"):
        await stop_task(task)
    assert task.done() and "messy ended with RuntimeError('cleanup broke')" in caplog.text
    await stop_task(task)  # already ended: nothing to do
