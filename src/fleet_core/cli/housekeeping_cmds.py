"""`fleet gc [--older-than AGE] [--dry-run]`, `fleet pause [--reason TEXT]`, `fleet resume`."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fleet_core.cli.verbs import Command

if TYPE_CHECKING:
    from fleet_core.config import Settings


def gc_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--older-than", metavar="AGE", default=None,
                   help="what ended longer ago than AGE (14d, 12h, 90m); "
                   "default: gc_retention_days")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="say what would go, remove nothing")
    p.add_argument("--json", action="store_true")


def gc(args: argparse.Namespace, settings: Settings) -> int:
    from datetime import timedelta

    from fleet_core.cli.acting import with_conductor
    from fleet_core.cli.auth_cmds import _require_admin
    from fleet_core.cli.output import dumps
    from fleet_core.gc import Collector, parse_age

    _require_admin(settings, "fleet gc (it looks at every operator's ended tasks)")
    if args.older_than is None:
        older = timedelta(days=settings.gc_retention_days)
    else:
        older = parse_age(args.older_than)
    nats_age = timedelta(hours=settings.nats_max_age_hours)
    report = with_conductor(settings, lambda c: Collector(c, older, dry_run=args.dry_run,
                                                          nats_max_age=nats_age).run())  # fmt: skip
    if args.json:
        print(dumps(report.to_dict()))
        return 0
    for item in report.removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {item.kind}: {item.path}")
    for path, why in report.kept:
        print(f"kept {path}: {why}")
    print(report.summary())
    return 0


def pause_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reason", default="", help="shown with the pause")
    p.add_argument("--json", action="store_true")


def pause(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core import pause as switch
    from fleet_core.cli.auth_cmds import _require_admin
    from fleet_core.cli.context import opened
    from fleet_core.cli.output import dumps
    from fleet_core.cli.runner import run_async

    _require_admin(settings, "pausing the fleet")

    async def go() -> tuple[switch.Pause, bool]:
        async with opened(settings) as db:
            return await switch.pause(db, settings.operator, args.reason)

    now, fresh = run_async(go)
    if args.json:
        print(dumps({"paused": now.to_dict(), "changed": fresh}))
    elif fresh:
        print(f"fleet {now.line()}: no spawn, retry or queued spawn starts until `fleet resume`;"
              " running agents continue")  # fmt: skip
    else:
        print(f"already {now.line()}")
    return 0


def resume_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def resume(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core import pause as switch
    from fleet_core.cli.auth_cmds import _require_admin
    from fleet_core.cli.context import opened
    from fleet_core.cli.output import dumps
    from fleet_core.cli.runner import run_async

    _require_admin(settings, "resuming the fleet")

    async def go() -> switch.Pause | None:
        async with opened(settings) as db:
            return await switch.resume(db, settings.operator)

    was = run_async(go)
    if args.json:
        print(dumps({"resumed": was is not None, "was": was.to_dict() if was else None}))
    elif was is None:
        print("the fleet was not paused")
    else:
        print(f"resumed (was {was.line()}): queued spawns and due retries start again")
    return 0


COMMANDS = {
    "gc": Command(gc_arguments, gc),
    "pause": Command(pause_arguments, pause),
    "resume": Command(resume_arguments, resume),
}
