"""`fleet secrets set NAME | list | unset NAME`: the local operator's secrets for their agents.

A value is read from stdin when stdin is not a terminal (one trailing newline dropped), else
from a prompt that does not echo; never from the command line, where `ps` and the shell's
history would see it. Nothing prints a value.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

from fleet_core.auth.secret_store import (
    MAX_VALUE_BYTES,
    SecretInfo,
    SecretStore,
    validate_name,
    validate_value,
)
from fleet_core.cli.context import opened
from fleet_core.cli.output import age, dumps, table
from fleet_core.cli.runner import run_async
from fleet_core.cli.verbs import Command
from fleet_core.config import Settings
from fleet_core.errors import BadInputError, DeniedError
from fleet_core.models import Tier
from fleet_core.runtime.adapters import build_adapters

T = TypeVar("T")
MANAGE_TIER = Tier.BUILDER  # who may spawn may give their agents keys


def arguments(sec: argparse.ArgumentParser) -> None:
    verbs = sec.add_subparsers(dest="secrets_verb", required=True, metavar="VERB")
    st = verbs.add_parser("set", help="store NAME; the value is read from stdin or a prompt")
    st.add_argument("name", help="a variable name, e.g. ANTHROPIC_API_KEY")
    st.add_argument("--json", action="store_true")
    ls = verbs.add_parser("list", help="your secrets' names and when they were set (no values)")
    ls.add_argument("--json", action="store_true")
    un = verbs.add_parser("unset", help="delete NAME")
    un.add_argument("name")
    un.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, settings: Settings) -> int:
    verbs = {"set": secrets_set, "list": secrets_list, "unset": secrets_unset}
    return verbs[args.secrets_verb](args, settings)


def _require(settings: Settings, tier: Tier, what: str) -> None:
    if not settings.tier.at_least(tier):
        raise DeniedError(f"{what} needs tier {tier.value}; {settings.operator} is "
                          f"{settings.tier.value}")  # fmt: skip


def with_store(settings: Settings, fn: Callable[[SecretStore], Awaitable[T]]) -> T:
    async def go() -> T:
        async with opened(settings) as db:
            return await fn(SecretStore.for_settings(settings, db))

    return run_async(go)


def read_value(name: str) -> str:
    """The value from stdin (not a terminal) or a prompt without echo."""
    if sys.stdin is None:
        raise BadInputError("value", "no stdin to read the value from")
    if sys.stdin.isatty():
        try:
            return getpass.getpass(f"value for {name} (not echoed): ")
        except EOFError:
            return ""
    raw = sys.stdin.buffer.read(MAX_VALUE_BYTES + 3)
    if len(raw) > MAX_VALUE_BYTES + 2:
        raise BadInputError("value", f"is longer than {MAX_VALUE_BYTES} bytes")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise BadInputError("value", "is not UTF-8 text") from None
    return text.removesuffix("\n").removesuffix("\r")


def agents_for(settings: Settings, name: str) -> list[str]:
    """The agent types whose allowlist (`[agents.<type>] env`) has `name`."""
    adapters = build_adapters(settings.agents)
    return sorted(a.agent_type.value for a in adapters.values() if name in a.env)


def iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat(timespec="seconds")


def info_json(info: SecretInfo, settings: Settings) -> dict[str, object]:
    return {
        "name": info.name,
        "set_at": iso(info.set_at),
        "updated_at": iso(info.updated_at),
        "agents": agents_for(settings, info.name),
    }


def secrets_set(args: argparse.Namespace, settings: Settings) -> int:
    _require(settings, MANAGE_TIER, "setting a secret")
    name = validate_name(args.name)
    value = validate_value(read_value(name))
    info, created = with_store(settings, lambda s: s.set(settings.operator, name, value))
    if args.json:
        doc = info_json(info, settings)
        print(dumps({"operator": settings.operator, "created": created, **doc}))
        return 0
    verb = "stored" if created else "replaced"
    print(f"{verb} {name} for {settings.operator} (encrypted; the value is never shown)")
    agents = agents_for(settings, name)
    if agents:
        print(f"  given to {', '.join(agents)} agents (their env lists {name})")
    else:
        print(f"  note: no agent type lists {name}; add it to `[agents.<type>] env` in fleet.toml "
              "to pass it to that agent")  # fmt: skip
    return 0


def secrets_list(args: argparse.Namespace, settings: Settings) -> int:
    _require(settings, Tier.OBSERVER, "listing secrets")
    every = with_store(settings, lambda s: s.entries(settings.operator))
    if args.json:
        print(dumps([info_json(i, settings) for i in every]))
        return 0
    if not every:
        print(f"No secrets for {settings.operator} (set one: fleet secrets set NAME).")
        return 0
    rows = [
        (i.name, iso(i.updated_at), age(i.updated_at), ", ".join(agents_for(settings, i.name))
         or "-")
        for i in every
    ]  # fmt: skip
    print(table(rows, ("NAME", "SET", "AGE", "AGENTS")))
    return 0


def secrets_unset(args: argparse.Namespace, settings: Settings) -> int:
    _require(settings, MANAGE_TIER, "deleting a secret")
    name = validate_name(args.name)
    info = with_store(settings, lambda s: s.unset(settings.operator, name))
    if args.json:
        print(dumps({"operator": settings.operator, "deleted": True, **info_json(info, settings)}))
        return 0
    print(f"deleted {name} for {settings.operator}")
    return 0


COMMANDS = {"secrets": Command(arguments, run)}
