"""`fleet events tail [--json] [--all]`: the fleet's events as they are published to NATS
JetStream (FLEET_NATS_URL), the local operator's own (every operator's with --all, for a
sovereign). One line per event; under --json one JSON document per line. Runs until
interrupted."""

from __future__ import annotations

import argparse

from fleet_core.cli.verbs import Command
from fleet_core.config import Settings


def arguments(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="events_verb", required=True, metavar="VERB")
    tail = verbs.add_parser("tail", help="print events as they happen (needs FLEET_NATS_URL)")
    tail.add_argument("--all", action="store_true", help="every operator's (sovereign)")
    tail.add_argument("--json", action="store_true", help="one JSON document per line")


def run(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio
    import json
    import sys

    from fleet_core.cli.context import local_tenant
    from fleet_core.cli.runner import run_async
    from fleet_core.errors import ConfigError, FleetError

    local_tenant(settings, all_operators=args.all)  # --all needs the admin tier
    if not settings.nats_url:
        raise ConfigError("events tail reads NATS JetStream: set FLEET_NATS_URL (nats://...)")

    async def go() -> int:
        import nats.errors
        from nats.js.api import DeliverPolicy

        from fleet_core.notify.nats import OPERATOR_HEADER, SUBJECTS, connect, ensure_stream

        try:
            nc = await connect(settings)
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            raise FleetError(f"cannot reach NATS at {settings.nats_url}: {exc}") from None
        try:
            js = nc.jetstream()
            await ensure_stream(js, settings)
            sub = await js.subscribe(SUBJECTS, ordered_consumer=True,
                                     deliver_policy=DeliverPolicy.NEW)  # fmt: skip
            print(f"fleet: following {SUBJECTS} on {settings.nats_url}", file=sys.stderr,
                  flush=True)  # fmt: skip
            async for msg in sub.messages:
                operator = (msg.headers or {}).get(OPERATOR_HEADER)
                if not args.all and operator != settings.operator:
                    continue
                doc = json.loads(msg.data)
                if args.json:
                    print(json.dumps(doc), flush=True)
                    continue
                data = doc.get("data") or {}
                task = str(data.get("task_id") or "-")[:8]
                what = data.get("summary") or (
                    f"{data.get('from_status')} → {data.get('to_status')}"
                    if data.get("to_status") else "")  # fmt: skip
                print(f"{doc.get('created_at', '')[:19]} {doc['event']:<18} {task:<8} "
                      f"{operator} {what}", flush=True)  # fmt: skip
        except asyncio.CancelledError:
            return 0
        finally:
            await nc.close()
        return 0

    return run_async(go)


COMMANDS = {"events": Command(arguments, run)}
