"""`fleet spawn | stop | delete | logs | attach`: the conductor's verbs for the local operator."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from fleet_core.cli.context import opened
from fleet_core.cli.output import dumps, task_json
from fleet_core.cli.repo_cmds import registered_notice
from fleet_core.cli.runner import run_async
from fleet_core.conductor import Actor, Conductor, SpawnOutcome
from fleet_core.config import Settings
from fleet_core.errors import BadInputError
from fleet_core.local_spawn import spawn_local
from fleet_core.models import AgentType, SpawnRequest, TaskType
from fleet_core.repositories import NAME_RE

T = TypeVar("T")
FOLLOW_INTERVAL_S = 1.0
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
    "description": "DESCRIPTION",
}


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    sp = sub.add_parser("spawn", help="start an agent on a new task")
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
    sp.add_argument("--json", action="store_true")
    for verb, text in (("stop", "kill the agent and cancel the task"),
                       ("retry", "try a failed or rejected task again now"),
                       ("merge", "merge a ready task's pull request through its forge"),
                       ("delete", "remove a finished task (its work is snapshotted first)"),
                       ("attach", "attach to the agent's tmux session")):  # fmt: skip
        p = sub.add_parser(verb, help=text)
        p.add_argument("id", help="task id or unique prefix")
        p.add_argument("--json", action="store_true")
    dm = sub.add_parser("demo", help="the whole lifecycle offline, with demo agents")
    dm.add_argument("--headless", action="store_true", help="print transitions, no console")
    lg = sub.add_parser("logs", help="the agent's terminal output")
    lg.add_argument("id", help="task id or unique prefix")
    lg.add_argument("-n", "--lines", type=int, default=100, help="last N lines (1-1000)")
    lg.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    lg.add_argument("--json", action="store_true")


def local_actor(settings: Settings) -> Actor:
    return Actor(settings.operator, settings.tier)


@asynccontextmanager
async def conductor(settings: Settings) -> AsyncIterator[Conductor]:
    async with opened(settings) as db:
        yield Conductor.from_settings(settings, db)


def with_conductor(settings: Settings, fn: Callable[[Conductor], Awaitable[T]]) -> T:
    async def go() -> T:
        async with conductor(settings) as c:
            return await fn(c)

    return run_async(go)


def repo_ref(text: str) -> str:
    """A registered repository's name as it is; anything else (a directory in particular:
    one of that name here wins) as an absolute path."""
    if NAME_RE.match(text) and not Path(text).is_dir():
        return text
    return str(Path(text).expanduser().absolute())


def spawn_request(args: argparse.Namespace) -> SpawnRequest:
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
    }
    try:
        return SpawnRequest.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "request"
        raise BadInputError(FLAGS.get(name, name), err["msg"]) from None


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
    why = f" ({out.route.reason.value})" if out.route else ""
    return (
        f"{head} {t.short_id}: {t.status.value} on {t.branch} with "
        f"{t.agent_type.value}/{t.model}{why}\n"
        f"  watch: fleet logs {t.short_id} -f    attach: fleet attach {t.short_id}"
    )


def spawn(args: argparse.Namespace, settings: Settings) -> int:
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
        registered_notice(registered, actor.operator_id, as_json=args.json)
    if args.json:
        if out.queued is not None:
            q = out.queued
            print(dumps({"queued": True, "queue_id": q.entry_id, "position": q.position,
                         "operator": q.operator_id, "existing": q.existing}))  # fmt: skip
        else:
            assert out.task is not None
            print(dumps(task_json(out.task)))
    else:
        print(spawn_text(out))
    return 0


def stop(args: argparse.Namespace, settings: Settings) -> int:
    rec = with_conductor(settings, lambda c: c.stop(local_actor(settings), args.id))
    print(dumps(task_json(rec)) if args.json else f"stopped {rec.short_id}: {rec.status.value}")
    return 0


def retry(args: argparse.Namespace, settings: Settings) -> int:
    rec = with_conductor(settings, lambda c: c.retry(local_actor(settings), args.id))
    text = f"retrying {rec.short_id}: attempt {rec.retry_count + 1}, {rec.status.value}"
    print(dumps(task_json(rec)) if args.json else text)
    return 0


def merge(args: argparse.Namespace, settings: Settings) -> int:
    rec = with_conductor(settings, lambda c: c.merge(local_actor(settings), args.id))
    text = f"merged {rec.short_id}: PR #{rec.pr_number} is in {rec.base_branch or 'its base'}"
    print(dumps(task_json(rec)) if args.json else text)
    return 0


def demo(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.demo import run_demo

    if not args.headless:
        from fleet_console.run import run_demo_console

        return run_demo_console(settings)
    final = run_async(lambda: run_demo(settings))
    return 0 if final else 1


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
            print(f"  unpushed or uncommitted work was saved in {snapshot}")
    return 0


def logs(args: argparse.Namespace, settings: Settings) -> int:
    actor = local_actor(settings)
    if not args.follow:
        text = with_conductor(settings, lambda c: c.logs(actor, args.id, args.lines))
        print(dumps({"lines": text.splitlines()}) if args.json else text)
        return 0

    async def follow(c: Conductor) -> None:
        shown: list[str] = []
        while True:
            lines = (await c.logs(actor, args.id, max(args.lines, 200))).splitlines()
            fresh = new_lines(shown, lines) if shown else lines[-args.lines :]
            for line in fresh:
                print(json.dumps({"line": line}) if args.json else line, flush=True)
            shown = lines
            if not await c.runtime.is_alive((await c.show(actor, args.id)).id):
                return
            await asyncio.sleep(FOLLOW_INTERVAL_S)

    with_conductor(settings, follow)
    return 0


def new_lines(before: list[str], after: list[str]) -> list[str]:
    """The lines of `after` past the longest suffix of `before` that starts it."""
    for start in range(len(before)):
        tail = before[start:]
        if after[: len(tail)] == tail:
            return after[len(tail) :]
    return after


def attach(args: argparse.Namespace, settings: Settings) -> int:
    cmd = with_conductor(settings, lambda c: c.attach_command(local_actor(settings), args.id))
    if args.json:
        print(dumps({"command": cmd}))
        return 0
    os.execvp(cmd[0], cmd)  # noqa: S606 (an argument list, no shell: this process becomes tmux)
