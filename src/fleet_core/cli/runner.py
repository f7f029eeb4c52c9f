"""Run a command: signals cancel it cleanly, errors become one line and an exit code, and a
reader that goes away (`fleet status | head -1`) ends it quietly."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fleet_core.errors import EXIT_OTHER, FleetError

T = TypeVar("T")
INTERRUPTED = 130
# A closed stdout (the reader of a pipe stopped reading) is not a failure of the command: like
# `gh`, fleet stops writing and exits 0, without a traceback.
CLOSED_PIPE = 0


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """asyncio.run with SIGINT/SIGTERM cancelling the command, so `finally` blocks (closing the
    pool) run before the process exits."""
    import asyncio
    import signal

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


def _cancelled(exc: BaseException) -> bool:
    asyncio = sys.modules.get("asyncio")  # imported by every verb that could be cancelled
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


def guarded(fn: Callable[[], int], *, as_json: bool = False) -> int:
    try:
        return fn()
    except FleetError as exc:
        return fail(exc, as_json=as_json)
    except BrokenPipeError:
        return closed_pipe()
    except KeyboardInterrupt:
        print("fleet: interrupted", file=sys.stderr)
        return INTERRUPTED
    except Exception as exc:  # a bug: say so in one line; the traceback goes to the log
        import logging

        logging.getLogger("fleet.cli").exception("unexpected error")
        print(f"fleet: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_OTHER
    except BaseException as exc:
        if _cancelled(exc):
            print("fleet: interrupted", file=sys.stderr)
            return INTERRUPTED
        raise


def closed_pipe() -> int:
    """Point stdout at /dev/null so that the interpreter's last flush does not fail again
    (what is left in the buffer goes there)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    finally:
        os.close(devnull)
    return CLOSED_PIPE


def finish(code: int) -> int:
    """Flush what the command printed while the exit code can still say what happened."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        closed_pipe()
    return code
