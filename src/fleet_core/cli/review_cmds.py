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


def reputation_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true")


def reputation(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.cli.context import opened
    from fleet_core.cli.output import dumps
    from fleet_core.cli.runner import run_async
    from fleet_core.review.reputation import reputations

    async def go() -> str:
        async with opened(settings, read_only=True) as db:
            found = await reputations(db)
        if args.json:
            return dumps([r.to_json() for r in found])
        if not found:
            return "no finished task yet: every key is cold (score 0.5, confidence none)"
        head = (f"{'agent:model:task type':<44} {'n':>4} {'score':>6} {'conf':>6}  "
                "first retried rejected abandoned")  # fmt: skip
        lines = [head]
        for r in found:
            conf = f"{r.confidence:.2f}" if r.confidence is not None else "-"
            lines.append(f"{r.key:<44} {r.n:>4} {r.score:>6.2f} {conf:>6}  {r.first:>5} "
                         f"{r.retried:>7} {r.rejected:>8} {r.abandoned:>9}")  # fmt: skip
        return "\n".join(lines)

    print(run_async(go))
    return 0


COMMANDS = {
    "diff": Command(diff_arguments, diff),
    "reputation": Command(reputation_arguments, reputation),
}
