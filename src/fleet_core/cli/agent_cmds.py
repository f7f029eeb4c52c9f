"""`fleet spawn | attach | stop | retry | merge | delete`: the conductor's verbs for the local
operator. The engine is imported when a verb runs, not when its arguments are parsed."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet_core.cli.acting import local_actor, with_conductor
from fleet_core.cli.output import dumps, task_json
from fleet_core.cli.verbs import Command
from fleet_core.errors import BadInputError

if TYPE_CHECKING:
    from fleet_core.conductor import SpawnOutcome
    from fleet_core.config import Settings
    from fleet_core.models import SpawnRequest

# SpawnRequest field → the flag a user typed.
FLAGS = {
    "repository": "--repo",
    "task_type": "--type",
    "agent_type": "--agent",
    "model": "--model",
    "base_branch": "--base",
    "max_retries": "--max-retries",
    "timeout_minutes": "--timeout-min",
    "context_overrides": "--context",
    "idempotency_key": "--idempotency-key",
    "runtime": "--runtime",
    "description": "DESCRIPTION",
}


def spawn_arguments(sp: argparse.ArgumentParser) -> None:
    from fleet_core.models import AgentType, TaskType

    sp.add_argument("description", metavar="DESCRIPTION", help="what to do ('-' reads stdin)")
    sp.add_argument("--repo", default=".",
                    help="a repository's name or directory (default: this directory)")  # fmt: skip
    sp.add_argument("--type", required=True, choices=[t.value for t in TaskType])
    sp.add_argument("--agent", choices=[a.value for a in AgentType], help="agent CLI to run")
    sp.add_argument("--model", help="model (default: the router's choice)")
    sp.add_argument("--base", help="branch to start from (default: the repository's default)")
    sp.add_argument("--max-retries", type=int, default=3)
    sp.add_argument("--timeout-min", type=int, default=120)
    sp.add_argument("--context", action="append", default=[], metavar="KEY=VALUE",
                    help="extra context for the prompt (repeatable)")  # fmt: skip
    sp.add_argument("--idempotency-key", help="a repeat with the same key returns the same task")
    sp.add_argument("--queue", action="store_true", help="over the limit, wait for a slot")
    sp.add_argument("--runtime", choices=["local", "container"],
                    help="where the agent runs (default: the agent type's, the repository's "
                    "or the global setting)")  # fmt: skip
    out = sp.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument("-q", "--quiet", action="store_true",
                     help="print only the task id (queued: queued:ENTRY)")  # fmt: skip


def task_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", help="task id or unique prefix")
    p.add_argument("--json", action="store_true")


def merge_arguments(p: argparse.ArgumentParser) -> None:
    task_arguments(p)
    p.add_argument("--force", action="store_true",
                   help="merge although the Definition of Done is not met (audited)")  # fmt: skip


def repo_ref(text: str) -> str:
    """A registered repository's name as it is; anything else (a directory in particular:
    one of that name here wins) as an absolute path."""
    from fleet_core.repositories import NAME_RE

    if NAME_RE.match(text) and not Path(text).is_dir():
        return text
    return str(Path(text).expanduser().absolute())


def spawn_request(args: argparse.Namespace) -> SpawnRequest:
    from pydantic import ValidationError

    from fleet_core.models import SpawnRequest

    description = sys.stdin.read() if args.description == "-" else args.description
    overrides: dict[str, str] = {}
    for item in args.context:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise BadInputError("--context", f"{item!r} is not KEY=VALUE")
        overrides[key.strip()] = value
    fields: dict[str, Any] = {
        "description": description,
        "repository": repo_ref(args.repo),
        "task_type": args.type,
        "agent_type": args.agent,
        "model": args.model,
        "base_branch": args.base,
        "max_retries": args.max_retries,
        "timeout_minutes": args.timeout_min,
        "context_overrides": overrides,
        "idempotency_key": args.idempotency_key,
        "runtime": getattr(args, "runtime", None),
    }
    try:
        return SpawnRequest.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "request"
        raise BadInputError(FLAGS.get(name, name), err["msg"]) from None


# Why the router chose the model, in words (RouteReason values).
ROUTE_WORDS = {
    "explicit_override": "as asked",
    "reputation_weighted": "the best record for this kind of task",
    "task_type_default": "the usual model for this kind of task",
    "agent_type_default": "this agent's usual model",
    "fallback": "the fallback: the usual model is not available",
}


def spawn_text(out: SpawnOutcome) -> str:
    if out.queued is not None:
        q = out.queued
        again = "already queued" if q.existing else "queued"
        return (
            f"{again}: entry {q.entry_id}, position {q.position} for {q.operator_id}; "
            "a running engine (or the next `fleet stop`) admits it when a slot frees"
        )
    assert out.task is not None
    t = out.task
    head = "existing task" if out.existing else "spawned"
    why = (
        f" ({ROUTE_WORDS.get(out.route.reason.value, out.route.reason.value)})" if out.route else ""
    )
    skipped = ""  # the reputation step passed a model over: say which and why
    if out.route and "reputation" in out.route.detail and "skipped" in out.route.detail:
        skipped = f"\n  route: {out.route.detail}"
    return (
        f"{head} {t.short_id}: {t.status.value} on {t.branch} with "
        f"{t.agent_type.value}/{t.model}{why}{skipped}\n"
        f"  watch: fleet logs {t.short_id} -f    attach: fleet attach {t.short_id}"
    )


def spawn(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.local_spawn import spawn_local

    request = spawn_request(args)
    actor = local_actor(settings)

    try:  # a repository of this OS user's is registered for the operator on first use
        out, registered = with_conductor(
            settings, lambda c: spawn_local(c, actor, request, queue=args.queue)
        )
    except BadInputError as exc:  # name the flag the user typed, not the model's field
        if exc.field in FLAGS:
            raise BadInputError(FLAGS[exc.field], exc.message) from None
        raise
    if registered is not None:
        from fleet_core.cli.repo_cmds import registered_notice

        registered_notice(registered, actor.operator_id, as_json=args.json)
    if args.quiet:  # for scripts: ID=$(fleet spawn -q ...)
        if out.queued is not None:
            print(f"queued:{out.queued.entry_id}")
        else:
            assert out.task is not None
            print(out.task.id)
    elif args.json:
        if out.queued is not None:
            q = out.queued
            print(dumps({"queued": True, "queue_id": q.entry_id, "position": q.position,
                         "operator": q.operator_id, "existing": q.existing}))  # fmt: skip
        else:
            assert out.task is not None
            print(dumps(task_json(out.task)))
    else:
        print(spawn_text(out))
    engine_notice(settings, as_json=args.json)
    return 0


def engine_notice(settings: Settings, *, as_json: bool) -> None:
    """After a verb that created or revived agents: the background engine is started when no
    engine serves this host and data dir, and the user is told so once (on stderr)."""
    from fleet_core.background import autostart_notice

    line = autostart_notice(settings)
    if line is None:
        return
    if as_json:
        print(json.dumps({"notice": "engine", "message": line.removeprefix("fleet: ")}),
              file=sys.stderr)  # fmt: skip
    else:
        print(line, file=sys.stderr)


def stop(args: argparse.Namespace, settings: Settings) -> int:
    out = with_conductor(settings, lambda c: c.stop_task(local_actor(settings), args.id))
    rec = out.task
    if args.json:
        print(dumps(task_json(rec)))
    elif not out.already_ended:
        print(f"stopped {rec.short_id}: {rec.status.value}")
    else:
        agent = "its agent was still running and is stopped" if out.killed else "no agent running"
        print(f"{rec.short_id}: already {rec.status.value}; {agent}")
    return 0


def retry_arguments(p: argparse.ArgumentParser) -> None:
    task_arguments(p)
    p.add_argument("--note", metavar="TEXT", help="your words for the next attempt's prompt")


def retry(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.task_verbs import check_note

    note = check_note(args.note)
    rec = with_conductor(settings, lambda c: c.retry(local_actor(settings), args.id, note=note))
    text = f"retrying {rec.short_id}: attempt {rec.retry_count + 1}, {rec.status.value}"
    print(dumps(task_json(rec)) if args.json else text)
    engine_notice(settings, as_json=args.json)
    return 0


def merge(args: argparse.Namespace, settings: Settings) -> int:
    actor = local_actor(settings)
    rec = with_conductor(settings, lambda c: c.merge(actor, args.id, force=args.force))
    text = f"merged {rec.short_id}: PR #{rec.pr_number} is in {rec.base_branch or 'its base'}"
    print(dumps(task_json(rec)) if args.json else text)
    return 0


def delete(args: argparse.Namespace, settings: Settings) -> int:
    gone = with_conductor(settings, lambda c: c.delete(local_actor(settings), args.id))
    snapshot = gone.cleanup.snapshot_dir if gone.cleanup else None
    if args.json:
        doc = task_json(gone.task)
        doc["snapshot"] = str(snapshot) if snapshot else None
        print(dumps(doc))
    else:
        print(f"deleted {gone.task.short_id}")
        if snapshot:
            print(f"  unpushed or uncommitted work (and ignored files) was saved in {snapshot}")
        skipped = gone.cleanup.ignored_skipped if gone.cleanup else 0
        if skipped:
            print(f"  {skipped} ignored files were left out: past the snapshot's 100 MB cap")
    return 0


def attach(args: argparse.Namespace, settings: Settings) -> int:
    cmd = with_conductor(settings, lambda c: c.attach_command(local_actor(settings), args.id))
    if args.json:
        print(dumps({"command": cmd}))
        return 0
    os.execvp(cmd[0], cmd)  # noqa: S606 (an argument list, no shell: this process becomes tmux)


COMMANDS = {
    "spawn": Command(spawn_arguments, spawn),
    "attach": Command(task_arguments, attach),
    "stop": Command(task_arguments, stop),
    "retry": Command(retry_arguments, retry),
    "merge": Command(merge_arguments, merge),
    "delete": Command(task_arguments, delete),
}
