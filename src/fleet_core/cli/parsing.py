"""The `fleet` argument parser: every verb listed, only the given verb's flags loaded."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import NoReturn

from fleet_core import __version__
from fleet_core.cli.verbs import BY_NAME, VERBS, Command, Verb, command
from fleet_core.errors import UsageError

# Flags before the verb that take a value (`fleet --port 9000 ...`).
GLOBAL_VALUED = frozenset({"--host", "--port"})


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError (one line, exit 2) instead of printing its usage block
    and exiting; `--help` and `--version` still print and exit 0."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def find_verb(argv: Sequence[str]) -> Verb | None:
    """The verb named on the command line: its first word that is not a global flag or the
    value of one. None when there is none, or the word is not a verb (argparse says so)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--":
            return None
        elif word.startswith("-"):
            skip = word in GLOBAL_VALUED
        else:
            return BY_NAME.get(word)
    return None


def build_parser(selected: Verb | None = None) -> tuple[Parser, Command | None]:
    """The parser with every verb's name and help; only `selected` gets its flags (its
    module is imported now), so `fleet --help` and each verb import no other verb's code."""
    parser = Parser(prog="fleet", description="Operator console for a fleet of AI coding agents.")
    parser.add_argument("--version", action="version", version=f"fleet {__version__}")
    parser.add_argument("--headless", action="store_true", help="engine + HTTP API, no console")
    parser.add_argument("--host", default="127.0.0.1", help="with --headless (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="with --headless (default 8765)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    chosen = None
    for verb in VERBS:
        verb_parser = sub.add_parser(verb.name, help=verb.help, description=verb.help)
        if verb is selected:
            chosen = command(verb)
            chosen.arguments(verb_parser)
    return parser, chosen
