"""`fleet notify status | redrive [ID] | set CHANNEL | list | remove CHANNEL | test`: the local
operator's notification channels and the outbox.

A Discord webhook URL or a Telegram bot token is read from stdin (or a prompt that does not
echo), never from the command line; it is stored encrypted and never printed.
"""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from fleet_core.cli.verbs import Command
from fleet_core.config import Settings

T = TypeVar("T")
CHANNELS = ("discord", "telegram", "desktop")


def arguments(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="notify_verb", required=True, metavar="VERB")
    st = verbs.add_parser("status", help="pending and dead-lettered notifications")
    st.add_argument("--all", action="store_true", help="every operator's (sovereign)")
    st.add_argument("-n", type=int, default=20, help="rows of each list (1-200)")
    st.add_argument("--json", action="store_true")
    rd = verbs.add_parser("redrive", help="try dead-lettered deliveries again")
    rd.add_argument("id", nargs="?", help="an event id (or its start) or dedup key; none: all")
    rd.add_argument("--all", action="store_true", help="every operator's (sovereign)")
    rd.add_argument("--json", action="store_true")
    se = verbs.add_parser("set", help="set up a channel (secrets are read from stdin)")
    se.add_argument("channel", choices=CHANNELS)
    se.add_argument("--chat-id", help="telegram: the chat to send to")
    se.add_argument("--events", help="comma-separated event types (default: what needs you)")
    se.add_argument("--default-events", action="store_true", help="back to the default events")
    se.add_argument("--off", action="store_true", help="keep the settings, send nothing")
    se.add_argument("--keep-secret", action="store_true", help="do not read a new secret")
    se.add_argument("--json", action="store_true")
    ls = verbs.add_parser("list", help="your channels (never their secrets)")
    ls.add_argument("--json", action="store_true")
    rm = verbs.add_parser("remove", help="delete a channel's settings")
    rm.add_argument("channel", choices=CHANNELS)
    rm.add_argument("--json", action="store_true")
    te = verbs.add_parser("test", help="send a test message now")
    te.add_argument("--channel", choices=(*CHANNELS, "cli"))
    te.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, settings: Settings) -> int:
    verbs = {"status": status, "redrive": redrive, "set": set_channel, "list": list_channels,
             "remove": remove_channel, "test": test}  # fmt: skip
    return verbs[args.notify_verb](args, settings)


def _with_db(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    from fleet_core.cli.context import opened
    from fleet_core.cli.runner import run_async

    async def go() -> T:
        async with opened(settings) as db:
            return await fn(db)

    return run_async(go)


def _store(db: Any, settings: Settings) -> Any:
    from fleet_core.auth.secret_store import SecretStore
    from fleet_core.notify.settings import ChannelStore

    return ChannelStore(db, SecretStore.for_settings(settings, db))


def _require(settings: Settings, tier: str, what: str) -> None:
    from fleet_core.errors import DeniedError
    from fleet_core.models import Tier

    if not settings.tier.at_least(Tier(tier)):
        raise DeniedError(f"{what} needs tier {tier}; {settings.operator} is "
                          f"{settings.tier.value}")  # fmt: skip


def status(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.cli.context import local_tenant
    from fleet_core.cli.output import dumps
    from fleet_core.errors import BadInputError
    from fleet_core.notify.status import MAX_LIST, outbox_status

    if not 1 <= args.n <= MAX_LIST:
        raise BadInputError("n", f"must be between 1 and {MAX_LIST}")
    tenant = local_tenant(settings, all_operators=args.all)
    doc = _with_db(settings, lambda db: outbox_status(db, tenant, args.n))
    if args.json:
        print(dumps(doc))
        return 0
    print(f"pending: {doc['pending']}   dead-lettered events: {doc['dead_lettered_events']}   "
          f"processed: {doc['processed']}")  # fmt: skip
    for e in doc["pending_events"]:
        err = f"  ({e['error']})" if e["error"] else ""
        print(f"  pending {e['id'][:8]} {e['event']} task {(e['task_id'] or '-')[:8]} "
              f"next {e['next_attempt_at']} tries {e['tries']}{err}")  # fmt: skip
    for d in doc["dead_letters"]:
        print(f"  dead    {(d['event_id'] or '-')[:8]} {d['event']} {d['channel']} "
              f"after {d['attempts']} attempts: {d['last_error'] or d['last_status']}")  # fmt: skip
    if doc["dead_letters"]:
        print("try them again: fleet notify redrive [ID]")
    return 0


def redrive(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.cli.context import local_tenant
    from fleet_core.cli.output import dumps
    from fleet_core.notify.status import redrive as do_redrive

    _require(settings, "builder", "redriving notifications")
    tenant = local_tenant(settings, all_operators=args.all)
    n = _with_db(settings, lambda db: do_redrive(db, tenant, args.id))
    if args.json:
        print(dumps({"redriven": n}))
    else:
        print(f"{n} dead-lettered deliver{'y' if n == 1 else 'ies'} queued again")
    return 0


def set_channel(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.cli.output import dumps
    from fleet_core.cli.secrets_cmds import read_value
    from fleet_core.errors import BadInputError
    from fleet_core.notify.events import validate_events

    _require(settings, "builder", "setting up notifications")
    if args.events is not None and args.default_events:
        raise BadInputError("events", "give --events or --default-events, not both")
    events = validate_events(args.events.split(",")) if args.events else None
    if args.chat_id is not None and args.channel != "telegram":
        raise BadInputError("chat_id", "only telegram has a chat id")
    secret = None
    if args.channel in ("discord", "telegram") and not args.keep_secret:
        what = "webhook URL" if args.channel == "discord" else "bot token"
        secret = read_value(f"the {args.channel} {what}")
        if not secret:
            raise BadInputError("webhook_url" if args.channel == "discord" else "bot_token",
                                "is empty (it is read from stdin)")  # fmt: skip
    keep = args.events is None and not args.default_events
    info = _with_db(settings, lambda db: _store(db, settings).set(
        settings.operator, args.channel, secret=secret, target=args.chat_id, events=events,
        enabled=not args.off, keep_events=keep))  # fmt: skip
    if args.json:
        print(dumps({"operator": settings.operator, **info.to_dict()}))
        return 0
    state = "off" if not info.enabled else "on"
    print(f"{args.channel} set for {settings.operator} ({state}; secrets stored encrypted); "
          f"check it: fleet notify test --channel {args.channel}")  # fmt: skip
    return 0


def list_channels(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.cli.output import dumps, table

    every = _with_db(settings, lambda db: _store(db, settings).entries(settings.operator))
    if args.json:
        print(dumps([i.to_dict() for i in every]))
        return 0
    if not every:
        print(f"No channels for {settings.operator}: notifications go to the log as "
              "[FLEET] lines (set one: fleet notify set discord|telegram|desktop).")  # fmt: skip
        return 0
    rows = [(i.channel, "on" if i.enabled else "off", i.target or "-",
             ",".join(i.events) if i.events is not None else "default")
            for i in every]  # fmt: skip
    print(table(rows, ("CHANNEL", "STATE", "TARGET", "EVENTS")))
    return 0


def remove_channel(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.cli.output import dumps

    _require(settings, "builder", "removing a channel")
    info = _with_db(settings, lambda db: _store(db, settings).remove(settings.operator,
                                                                     args.channel))  # fmt: skip
    if args.json:
        print(dumps({"operator": settings.operator, "deleted": True, **info.to_dict()}))
    else:
        print(f"removed {args.channel} for {settings.operator}")
    return 0


def test(args: argparse.Namespace, settings: Settings) -> int:
    import sys

    from fleet_core.auth.secret_store import SecretStore
    from fleet_core.cli.output import dumps
    from fleet_core.notify.service import NotifyService, send_test

    async def go(db: Any) -> dict[str, dict[str, object]]:
        stream = None if args.json else sys.stdout
        svc = NotifyService(settings, db, SecretStore.for_settings(settings, db),
                            cli_stream=stream)  # fmt: skip
        try:
            return await send_test(svc, settings.operator, args.channel)
        finally:
            await svc.stop()

    results = _with_db(settings, go)
    if args.json:
        print(dumps(results))
    else:
        for name, r in results.items():
            print(f"{name}: {'sent' if r['ok'] else 'FAILED'}"
                  + (f" ({r['error']})" if r["error"] else ""))  # fmt: skip
    return 0 if all(r["ok"] for r in results.values()) else 1


COMMANDS = {"notify": Command(arguments, run)}
