"""`fleet status` and `fleet show`: reading the registry as the local operator. Both only read:
no engine import, no migration check."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fleet_core.cli.verbs import Command

if TYPE_CHECKING:
    from fleet_core.config import Settings


NO_ENGINE = (
    "NO ENGINE: no engine runs on this host for this data dir, so tasks do not move on "
    "(`fleet engine start`, or the console)"
)


def status_arguments(st: argparse.ArgumentParser) -> None:
    st.add_argument("--all", action="store_true", help="every operator's tasks (admin)")
    st.add_argument("--status", help="only these statuses, comma-separated")
    st.add_argument("--limit", type=int, default=50, help="at most this many tasks (1-1000)")
    st.add_argument("--json", action="store_true")


def show_arguments(show: argparse.ArgumentParser) -> None:
    show.add_argument("id", help="task id or unique prefix")
    show.add_argument("--json", action="store_true")


def unsandboxed_note(settings: Settings) -> str:
    """A last line when agents spawned from here would run without a sandbox (auto or off)."""
    from fleet_core.runtime.sandbox import SandboxMode, SandboxPolicy, unavailable

    policy = SandboxPolicy(settings.sandbox or SandboxMode.AUTO, settings.sandbox_network)
    why = unavailable(policy)
    return f"\n\nWARNING: agents run UNSANDBOXED here: {why}" if why else ""


def status(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.cli.context import describe, local_tenant, opened
    from fleet_core.cli.output import dumps, status_text, task_json
    from fleet_core.cli.runner import run_async
    from fleet_core.errors import BadInputError
    from fleet_core.lifecycle import parse_statuses
    from fleet_core.registry import TaskRegistry

    statuses = parse_statuses(args.status, "--status")
    if not 1 <= args.limit <= 1000:
        raise BadInputError("--limit", "must be between 1 and 1000")
    tenant = local_tenant(settings, all_operators=args.all)

    from fleet_core.forge.problems import PROBLEMS_FILE
    from fleet_core.forge.problems import read as forge_problems
    from fleet_core.pause import current

    forges = forge_problems(settings.data_dir / "forge" / PROBLEMS_FILE)
    from fleet_core.background import running

    engine = running(settings)  # who follows the tasks here (the lock file only)

    async def go() -> str:
        async with opened(settings, read_only=True) as db:
            summary = await TaskRegistry(db, tenant).summary(status=statuses, limit=args.limit)
            paused = await current(db)
            if args.json:
                doc = summary.model_dump(mode="json", exclude={"tasks"})
                doc["paused"] = paused.to_dict() if paused else None
                doc["forge_errors"] = forges
                doc["engine"] = engine.to_dict() if engine else None
                doc["tasks"] = [task_json(t) for t in summary.tasks]
                return dumps(doc)
            who = "all operators" if args.all else f"operator {settings.operator}"
            queue = []
            if summary.queued:
                from fleet_core.governor import Governor

                queue = await Governor(db).queue(tenant)
            text = status_text(summary, who=who, where=describe(db), queue=queue)
            head = [f"FORGE: {repo}: {error}" for repo, error in forges.items()]
            if engine is None and summary.active:
                head.insert(0, NO_ENGINE)
            if paused:
                head.insert(0, f"PAUSED: fleet {paused.line()} (`fleet resume` lifts it)")
            if head:
                text = "\n".join(head) + "\n\n" + text
            return text + unsandboxed_note(settings)

    print(run_async(go))
    return 0


def show(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.cli.context import local_tenant, opened
    from fleet_core.cli.output import details_text, dumps, task_json
    from fleet_core.cli.runner import run_async
    from fleet_core.registry import TaskRegistry

    tenant = local_tenant(settings)

    from fleet_core import route_note
    from fleet_core.review.store import ReviewStore
    from fleet_core.review.view import verdict_lines

    async def go() -> str:
        async with opened(settings, read_only=True) as db:
            rec = await TaskRegistry(db, tenant).resolve(args.id)
            reviews = await ReviewStore(db).for_task(tenant, rec.id)
            route = await route_note.read(db, tenant, rec.id)
        if args.json:
            return dumps({**task_json(rec), "reviews": [r.to_json() for r in reviews],
                          "route": route})  # fmt: skip
        text = details_text(rec)
        if route is not None:  # the router's reputation step passed a model over
            text += f"\n\nroute: {route['detail']}"
        if not reviews and not rec.review_status:
            return text
        return text + "\n\n" + "\n".join(verdict_lines(reviews, rec.review_status))

    print(run_async(go))
    return 0


COMMANDS = {
    "status": Command(status_arguments, status),
    "show": Command(show_arguments, show),
}
