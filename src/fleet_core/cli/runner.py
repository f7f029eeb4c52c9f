"""Run a command coroutine: signals cancel it cleanly, errors become one line and an exit code."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fleet_core.errors import EXIT_OTHER, FleetError

T = TypeVar("T")
INTERRUPTED = 130


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """asyncio.run with SIGINT/SIGTERM cancelling the command, so `finally` blocks (closing the
    pool) run before the process exits."""

    async def main() -> T:
        task = asyncio.ensure_future(make())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


def fail(exc: FleetError, *, as_json: bool) -> int:
    if as_json:
        print(json.dumps(exc.to_dict()), file=sys.stderr)
    else:
        print(f"fleet: {exc}", file=sys.stderr)
    return exc.exit_code


def guarded(fn: Callable[[], int], *, as_json: bool = False) -> int:
    try:
        return fn()
    except FleetError as exc:
        return fail(exc, as_json=as_json)
    except asyncio.CancelledError:
        print("fleet: interrupted", file=sys.stderr)
        return INTERRUPTED
    except KeyboardInterrupt:
        print("fleet: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # a bug: say so in one line; the traceback goes to the log
        import logging

        logging.getLogger("fleet.cli").exception("unexpected error")
        print(f"fleet: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_OTHER
