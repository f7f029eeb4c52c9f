"""`fleet demo [--headless]`: the whole lifecycle offline, with demo agents."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fleet_core.cli.verbs import Command

if TYPE_CHECKING:
    from fleet_core.config import Settings


def arguments(dm: argparse.ArgumentParser) -> None:
    dm.add_argument("--headless", action="store_true", help="print transitions, no console")


def demo(args: argparse.Namespace, settings: Settings) -> int:
    if not args.headless:
        from fleet_console.run import run_demo_console

        return run_demo_console(settings)
    from fleet_core.cli.runner import run_async
    from fleet_core.demo import run_demo

    final = run_async(lambda: run_demo(settings))
    return 0 if final else 1


COMMANDS = {"demo": Command(arguments, demo)}
