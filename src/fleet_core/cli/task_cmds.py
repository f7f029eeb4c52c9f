"""`fleet status` and `fleet show`: reading the registry as the local operator."""

from __future__ import annotations

import argparse

from fleet_core.cli.context import describe, local_tenant, opened
from fleet_core.cli.output import details_text, dumps, status_text, task_json
from fleet_core.cli.runner import run_async
from fleet_core.config import Settings
from fleet_core.errors import BadInputError
from fleet_core.governor import Governor
from fleet_core.lifecycle import parse_statuses
from fleet_core.registry import TaskRegistry


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    st = sub.add_parser("status", help="the fleet: counts and the newest tasks")
    st.add_argument("--all", action="store_true", help="every operator's tasks (admin)")
    st.add_argument("--status", help="only these statuses, comma-separated")
    st.add_argument("--limit", type=int, default=50, help="at most this many tasks (1-1000)")
    st.add_argument("--json", action="store_true")
    show = sub.add_parser("show", help="one task in detail")
    show.add_argument("id", help="task id or unique prefix")
    show.add_argument("--json", action="store_true")


def status(args: argparse.Namespace, settings: Settings) -> int:
    statuses = parse_statuses(args.status, "--status")
    if not 1 <= args.limit <= 1000:
        raise BadInputError("--limit", "must be between 1 and 1000")
    tenant = local_tenant(settings, all_operators=args.all)

    async def go() -> str:
        async with opened(settings) as db:
            summary = await TaskRegistry(db, tenant).summary(status=statuses, limit=args.limit)
            if args.json:
                doc = summary.model_dump(mode="json", exclude={"tasks"})
                doc["tasks"] = [task_json(t) for t in summary.tasks]
                return dumps(doc)
            who = "all operators" if args.all else f"operator {settings.operator}"
            queue = await Governor(db).queue(tenant) if summary.queued else []
            return status_text(summary, who=who, where=describe(db), queue=queue)

    print(run_async(go))
    return 0


def show(args: argparse.Namespace, settings: Settings) -> int:
    tenant = local_tenant(settings)

    async def go() -> str:
        async with opened(settings) as db:
            rec = await TaskRegistry(db, tenant).resolve(args.id)
        return dumps(task_json(rec)) if args.json else details_text(rec)

    print(run_async(go))
    return 0
