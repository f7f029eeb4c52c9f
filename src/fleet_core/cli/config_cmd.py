"""`fleet config show | path`: the settings in effect, or the config file's path."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING

from fleet_core.cli.verbs import Command

if TYPE_CHECKING:
    from fleet_core.config import Settings


def arguments(cfg: argparse.ArgumentParser) -> None:
    verbs = cfg.add_subparsers(dest="config_verb", required=True, metavar="VERB")
    verbs.add_parser("show", help="every setting in effect (passwords masked)")
    verbs.add_parser("path", help="the path of fleet.toml")


def path(args: argparse.Namespace) -> int | None:
    """`config path` answers before the settings are read: it must work while they are bad."""
    if args.config_verb != "path":
        return None
    from fleet_core.config import config_path

    print(config_path())
    return 0


def show(args: argparse.Namespace, settings: Settings) -> int:
    print(json.dumps(settings.redacted(), indent=2))
    return 0


COMMANDS = {"config": Command(arguments, show, early=path)}
