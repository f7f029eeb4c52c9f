"""`fleet logs ID [-n N] [-f]`: the agent's terminal output. Only reads: no migration check."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from fleet_core.cli.verbs import Command

if TYPE_CHECKING:
    from fleet_core.conductor import Conductor
    from fleet_core.config import Settings

FOLLOW_INTERVAL_S = 1.0


def arguments(lg: argparse.ArgumentParser) -> None:
    lg.add_argument("id", help="task id or unique prefix")
    lg.add_argument("-n", "--lines", type=int, default=100, help="last N lines (1-1000)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    lg.add_argument("--json", action="store_true")


def logs(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from fleet_core.cli.acting import local_actor, with_conductor
    from fleet_core.cli.output import dumps

    actor = local_actor(settings)
    if not args.follow:
        read = with_conductor(
            settings, lambda c: c.logs(actor, args.id, args.lines), read_only=True
        )
        print(dumps({"lines": read.splitlines()}) if args.json else read)
        return 0

    async def follow(c: Conductor) -> None:
        shown: list[str] = []
        while True:
            lines = (await c.logs(actor, args.id, max(args.lines, 200))).splitlines()
            fresh = new_lines(shown, lines) if shown else lines[-args.lines :]
            for line in fresh:
                print(json.dumps({"line": line}) if args.json else line, flush=True)
            shown = lines
            if not await c.runtime.is_alive((await c.show(actor, args.id)).id):
                return
            await asyncio.sleep(FOLLOW_INTERVAL_S)

    with_conductor(settings, follow, read_only=True)
    return 0


def new_lines(before: list[str], after: list[str]) -> list[str]:
    """The lines of `after` past the longest suffix of `before` that starts it."""
    for start in range(len(before)):
        tail = before[start:]
        if after[: len(tail)] == tail:
            return after[len(tail) :]
    return after


COMMANDS = {"logs": Command(arguments, logs)}
