"""`fleet engine status | start | stop | run`: the engine of this host and data dir (DESIGN
§10). `status`, `start` and `stop` only look at the engine lock (no database, no engine
import); `run` is the engine itself, in this process (what `start` detaches)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import time
from typing import TYPE_CHECKING

from fleet_core.cli.verbs import Command

if TYPE_CHECKING:
    from fleet_core.config import Settings
    from fleet_core.engine_lock import Holder

STOP_TIMEOUT_S = 60.0


def arguments(p: argparse.ArgumentParser) -> None:
    verbs = p.add_subparsers(dest="engine_verb", required=True, metavar="VERB")
    for name, what in (
        ("status", "whether an engine serves this host and data dir, and which"),
        ("start", "start the background engine (a spawn or retry starts it when needed)"),
        ("stop", "stop the background engine (agents keep running)"),
    ):
        verbs.add_parser(name, help=what).add_argument("--json", action="store_true")
    run = verbs.add_parser("run", help="run the engine in this process (for a service manager)")
    run.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)


def holder_json(settings: Settings, holder: Holder | None) -> dict[str, object]:
    doc: dict[str, object] = {"running": holder is not None, "data_dir": str(settings.data_dir),
                              "host": settings.host_id}  # fmt: skip
    if holder is not None:
        doc.update(holder.to_dict())
    return doc


def holder_text(holder: Holder | None) -> str:
    if holder is None:
        return (
            "engine: not running (the next `fleet spawn` or `fleet retry` starts the background "
            "engine; or `fleet engine start`, the console, `fleet --headless`)"
        )
    text = f"engine: {holder.line()}"
    if holder.role == "background" and holder.idle_minutes is not None:
        text += f"; it stops after {holder.idle_minutes:g} min with no live or pending task"
    return text


def status(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.background import running

    holder = running(settings)
    print(json.dumps(holder_json(settings, holder)) if args.json else holder_text(holder))
    return 0


def start(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.background import start_detached
    from fleet_core.errors import FleetError

    result = start_detached(settings)
    if result.error is not None:
        raise FleetError(f"the background engine did not start: {result.error}")
    if args.json:
        print(json.dumps({**holder_json(settings, result.holder), "started": result.started}))
    elif result.started:
        print(f"started {holder_text(result.holder).removeprefix('engine: ')}")
    else:
        print(f"already running: {holder_text(result.holder).removeprefix('engine: ')}")
    return 0


def stop(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.background import running
    from fleet_core.errors import ConflictError, FleetError

    holder = running(settings)
    if holder is None:
        print(json.dumps({**holder_json(settings, None), "stopped": None}) if args.json
              else "engine: not running")  # fmt: skip
        return 0
    if holder.role != "background" or holder.pid <= 0:
        raise ConflictError(f"the engine here is {holder.line()}: quit it there")
    with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
        os.kill(holder.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while (now := running(settings)) is not None and now.pid == holder.pid:
        if time.monotonic() > deadline:
            raise FleetError(f"the background engine (pid {holder.pid}) is still stopping "
                             f"after {STOP_TIMEOUT_S:.0f} s")  # fmt: skip
        time.sleep(0.1)
    if args.json:
        print(json.dumps({**holder_json(settings, now), "stopped": holder.pid}))
        return 0
    print(f"stopped the background engine (pid {holder.pid}); agents keep running")
    if now is not None:  # a console or server that was its client took the role over
        print(f"the engine is now {now.line()}")
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.background_run import run_engine
    from fleet_core.cli.runner import run_async

    return run_async(lambda: run_engine(settings, args.ready_fd))


def dispatch(args: argparse.Namespace, settings: Settings) -> int:
    verb = {"status": status, "start": start, "stop": stop, "run": run}[args.engine_verb]
    return verb(args, settings)


COMMANDS = {"engine": Command(arguments, dispatch)}
