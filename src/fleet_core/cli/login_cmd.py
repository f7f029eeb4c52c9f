"""`fleet agent login AGENT`: an agent CLI's own login, in its sandbox HOME."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fleet_core.cli.verbs import Command

if TYPE_CHECKING:
    from fleet_core.config import Settings


def arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    login = sub.add_parser("login", help="log the agent's CLI in, in your agents' HOME for it")
    login.add_argument("agent", metavar="AGENT", help="claude_code, codex or gemini")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.runtime.login import run_login

    return run_login(settings, args.agent)


COMMANDS = {"agent": Command(arguments, run)}
