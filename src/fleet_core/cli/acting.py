"""Acting through the conductor as the local operator, for any verb: `with_conductor(settings,
lambda c: c.stop(local_actor(settings), ref))`. The engine is imported when a verb runs, not
when this module is."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from fleet_core.conductor import Actor, Conductor
    from fleet_core.config import Settings

T = TypeVar("T")


def local_actor(settings: Settings) -> Actor:
    from fleet_core.conductor import Actor

    return Actor(settings.operator, settings.tier)


@asynccontextmanager
async def conductor(settings: Settings, *, read_only: bool = False) -> AsyncIterator[Conductor]:
    from fleet_core.cli.context import opened
    from fleet_core.conductor import Conductor

    async with opened(settings, read_only=read_only) as db:
        c = Conductor.from_settings(settings, db)
        try:
            yield c
        finally:  # its clients (the Docker daemon's among them) are closed, not dropped
            await c.stop_engine()


def with_conductor(
    settings: Settings, fn: Callable[[Conductor], Awaitable[T]], *, read_only: bool = False
) -> T:
    from fleet_core.cli.runner import run_async

    async def go() -> T:
        async with conductor(settings, read_only=read_only) as c:
            return await fn(c)

    return run_async(go)
