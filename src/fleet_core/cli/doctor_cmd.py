"""`fleet doctor [--json]`: sandbox, network helper, tmux, PostgreSQL, git, gh and each agent
CLI, one line each; exit 1 when something the configuration needs is missing."""

from __future__ import annotations

import argparse
import json

from fleet_core.cli.runner import run_async
from fleet_core.cli.verbs import Command
from fleet_core.config import Settings

SYMBOL = {"ok": "ok  ", "warn": "warn", "missing": "MISS"}


def arguments(doc: argparse.ArgumentParser) -> None:
    doc.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.doctor import diagnose

    checks = run_async(lambda: diagnose(settings))
    failed = any(c.failed for c in checks)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [c.to_dict() for c in checks]}))
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            need = "" if c.needed or c.state == "ok" else " (optional)"
            print(f"{SYMBOL[c.state]}  {c.name:<{width}}  {c.detail}{need}")
    return 1 if failed else 0


COMMANDS = {"doctor": Command(arguments, run)}
