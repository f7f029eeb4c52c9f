"""Async subprocesses with an argument list (never a shell) and a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from fleet_core.errors import FleetError


class CommandError(FleetError):
    code = "command_failed"

    def __init__(self, argv: Sequence[str], returncode: int | None, output: str) -> None:
        what = "timed out" if returncode is None else f"exit {returncode}"
        tail = output.strip().splitlines()[-5:]
        super().__init__(f"{argv[0]} {' '.join(argv[1:3])} ... {what}: {' | '.join(tail)}")
        self.argv = list(argv)
        self.returncode = returncode
        self.output = output


@dataclass(frozen=True)
class Result:
    returncode: int
    stdout: str
    stderr: str


async def run(
    argv: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    check: bool = True,
    stdin: bytes | None = None,
) -> Result:
    """Run argv; on timeout the process group is killed and CommandError raised."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        async with asyncio.timeout(timeout):  # wait_for could swallow a cancellation
            out, err = await proc.communicate(stdin)
    except TimeoutError:
        await _kill(proc)
        raise CommandError(argv, None, f"no result within {timeout:.0f} s") from None
    except asyncio.CancelledError:
        await _kill(proc)
        raise
    result = Result(
        proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace")
    )
    if check and result.returncode != 0:
        raise CommandError(argv, result.returncode, result.stderr or result.stdout)
    return result


async def _kill(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    await proc.wait()
