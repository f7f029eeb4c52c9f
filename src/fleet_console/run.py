"""Entry points of the console: `fleet` (your fleet) and `fleet demo` (the offline demo)."""

from __future__ import annotations

import logging
import os

from fleet_console.app import FleetApp
from fleet_core.conductor import Actor
from fleet_core.config import Settings
from fleet_core.demo import DEMO_MONITOR, demo_settings, start_demo
from fleet_core.engine import Engine
from fleet_core.engine_role import served_engine

log = logging.getLogger("fleet.console")


def _terminal() -> None:
    """Over ssh COLORTERM is often lost: ask for truecolor unless the user chose."""
    if "COLORTERM" not in os.environ and "TEXTUAL_COLOR_SYSTEM" not in os.environ:
        os.environ["TEXTUAL_COLOR_SYSTEM"] = "truecolor"


def run_console(settings: Settings) -> int:
    _terminal()
    FleetApp(settings).run()
    _hand_over(settings)
    return 0


def _hand_over(settings: Settings) -> None:
    """Agents outlive the console: when some still need an engine and no other process is the
    engine here, the background engine takes over (said on the restored terminal)."""
    import asyncio
    import sys

    from fleet_core.background_run import hand_over

    said = asyncio.run(hand_over(settings))
    if said:
        print(said, file=sys.stderr)


def run_demo_console(settings: Settings, *, others: bool = False) -> int:
    _terminal()
    settings = demo_settings(settings, settings.data_dir / "demo" / "sample")
    actor = Actor(settings.operator, settings.tier)

    async def begin(engine: Engine) -> None:
        await start_demo(engine, actor, lambda line: log.info(line), others=others)

    app = FleetApp(
        settings,
        engine=lambda bus: served_engine(
            settings, "demo", tenant=actor.tenant, bus=bus, config=DEMO_MONITOR, evict=True
        ),
        after_start=begin,
    )
    app.run()
    _hand_over(settings)
    return 0
