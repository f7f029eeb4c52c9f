"""Every `fleet` verb: its name, one line of help, and the module that implements it.

Adding a verb is one line in VERBS plus a module in this package that defines

    COMMANDS = {"<verb>": Command(arguments, run)}

where `arguments(parser)` adds the verb's flags and `run(args, settings)` does the work and
returns the exit code. `fleet --help` reads only this table; a verb's module is imported when
that verb is given (to parse its arguments and run it) and never otherwise, so each verb pays
only for its own imports. Keep a module's top-level imports to what parsing needs (argparse,
the enums its `choices` list) and import the engine inside `run` (`cli.acting.with_conductor`
does); a verb that only reads passes `read_only=True` (no bootstrap, no migration check).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import argparse

    from fleet_core.config import Settings


class Verb(NamedTuple):
    name: str
    help: str
    module: str  # fleet_core.cli.<module>


class Command(NamedTuple):
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Settings], int]
    # Answers before the settings are read when it returns an exit code (`config path` must
    # work while the config file is broken); None goes on to read the settings and `run`.
    early: Callable[[argparse.Namespace], int | None] | None = None


VERBS: tuple[Verb, ...] = (
    Verb("spawn", "start an agent on a new task", "agent_cmds"),
    Verb("status", "the fleet: counts and the newest tasks", "task_cmds"),
    Verb("show", "one task in detail", "task_cmds"),
    Verb("logs", "the agent's terminal output", "logs_cmd"),
    Verb("attach", "attach to the agent's tmux session", "agent_cmds"),
    Verb("stop", "kill the agent and cancel the task", "agent_cmds"),
    Verb("retry", "try a failed or rejected task again now", "agent_cmds"),
    Verb("merge", "merge a ready task's pull request through its forge", "agent_cmds"),
    Verb("delete", "remove a finished task (its work is snapshotted first)", "agent_cmds"),
    Verb("demo", "the whole lifecycle offline, with demo agents", "demo_cmd"),
    Verb("engine", "the engine that follows your tasks: status, start, stop", "engine_cmds"),
    Verb("gc", "remove what ended tasks left (checkouts, logs)", "housekeeping_cmds"),
    Verb("pause", "stop admissions, retries and queued spawns fleet-wide", "housekeeping_cmds"),
    Verb("resume", "lift `fleet pause`", "housekeeping_cmds"),
    Verb("token", "bearer tokens for the HTTP API", "auth_cmds"),
    Verb("operator", "operators' stored tiers", "operator_cmds"),
    Verb("agent", "log an agent CLI in (its own login, in your agents' HOME)", "login_cmd"),
    Verb("secrets", "your secrets for your agents (stored encrypted)", "secrets_cmds"),
    Verb("repo", "the repositories agents may work in, and who may use them", "repo_cmds"),
    Verb("notify", "notification channels, pending and dead-lettered deliveries", "notify_cmds"),
    Verb("events", "follow the fleet's events on NATS JetStream", "events_cmd"),
    Verb("keys", "the API's signing keys", "auth_cmds"),
    Verb("db", "the database: migrations, URL, embedded server", "db_cmd"),
    Verb("config", "show the settings in effect, or the file's path", "config_cmd"),
    Verb("doctor", "what this machine has of what fleet uses", "doctor_cmd"),
    Verb("image", "container mode's agent images: build, list", "image_cmds"),
)

BY_NAME: dict[str, Verb] = {v.name: v for v in VERBS}


def command(verb: Verb) -> Command:
    """The verb's Command, importing its module now."""
    module = importlib.import_module(f"fleet_core.cli.{verb.module}")
    found: Command = module.COMMANDS[verb.name]
    return found
