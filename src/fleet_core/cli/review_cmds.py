"""`fleet diff ID`: the task's PR diff against its base (what the reviewers read)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fleet_core.cli.verbs import Command

if TYPE_CHECKING:
    from fleet_core.config import Settings


def diff_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", help="task id or unique prefix")
    parser.add_argument("--stat", action="store_true", help="only the files changed")


def diff(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.cli.acting import local_actor, with_conductor
    from fleet_core.review.view import task_diff

    actor = local_actor(settings)
    _rec, text = with_conductor(settings, lambda c: task_diff(c, actor, args.id), read_only=True)
    if args.stat:
        text = "\n".join(line[len("diff --git ") :] for line in text.splitlines()
                         if line.startswith("diff --git "))  # fmt: skip
    print(text, end="" if text.endswith("\n") or not text else "\n")
    return 0


COMMANDS = {"diff": Command(diff_arguments, diff)}
