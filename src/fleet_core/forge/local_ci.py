"""CI of the local forge: the repository's CI command run in the background in a scratch
worktree of the PR head, one result per head SHA.

A run's output goes straight to its log file (stdout and stderr interleaved, as a terminal
would show them), so a run that times out still leaves what it printed, and a chatty test suite
does not sit in memory. The result is `<sha>.json` next to `<sha>.log`; `<sha>.run` claims a
running SHA (holding the pid) so two engine processes never run the same head twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fleet_core.forge.base import CiReport
from fleet_core.models import CiStatus
from fleet_core.runtime.contained import Confinement, base_env
from fleet_core.runtime.git import git
from fleet_core.runtime.proc import CommandError

log = logging.getLogger(__name__)

EXCERPT_LINES = 60
EXCERPT_CHARS = 4000
CLAIM_GRACE_S = 300.0  # a claim older than the timeout plus this is stale whatever its pid


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json(path: Path, data: Any) -> None:
    """Atomic: a reader sees the old file or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def log_tail(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - 4 * EXCERPT_CHARS))
            data = fh.read()
    except OSError:
        return ""
    lines = data.decode(errors="replace").splitlines()[-EXCERPT_LINES:]
    return "\n".join(lines)[-EXCERPT_CHARS:]


async def remove_worktree(bare: Path, path: Path, count: Callable[[], None]) -> None:
    """`git worktree remove --force`; when git cannot (or did not), delete and prune."""
    count()
    result = await git(bare, "worktree", "remove", "--force", str(path), check=False)
    if result.returncode != 0 or path.exists():
        await asyncio.to_thread(shutil.rmtree, path, True)
        count()
        await git(bare, "worktree", "prune", check=False)


async def run_to_log(argv: list[str], cwd: Path, log_path: Path, timeout: float) -> int | None:
    """Run argv with its output in log_path; None when it timed out (its process group is
    killed, as are any strays it left behind when it exits)."""
    env = base_env({"CI": "true"})  # never the engine's variables: this is the PR's code
    with log_path.open("wb") as out:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=cwd,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            out.write(f"[fleet] cannot run {argv[0]}: {exc}\n".encode())
            return 127
        try:
            async with asyncio.timeout(timeout):
                return await proc.wait()
        except TimeoutError:
            return None
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()


class CiRunner:
    """The forge's background CI runs (asyncio tasks), at most `parallel` at a time."""

    def __init__(
        self,
        *,
        timeout_s: float,
        parallel: int,
        count: Callable[[], None],
        confinement: Confinement | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.confinement = confinement
        self._count = count
        self._sem = asyncio.Semaphore(parallel)
        self._tasks: dict[Path, asyncio.Task[None]] = {}  # result file → its run
        self._live: set[tuple[Path, Path]] = set()  # (bare repo, scratch worktree)

    def report(self, pr: int, sha: str, bare: Path, home: Path, argv: list[str] | None) -> CiReport:
        """The stored result for `sha`, else pending (starting the run when none is going).
        `home`: the forge's directory for the remote `bare`, with ci/ and scratch/ in it."""
        ci_dir, scratch = home / "ci", home / "scratch"
        result_path = ci_dir / f"{sha}.json"
        stored = _read(result_path)
        if stored is not None:
            return _from_result(pr, sha, stored, ci_dir / f"{sha}.log")
        if argv is None:
            return CiReport(
                pr, CiStatus.PASSING, log_excerpt="no CI command configured", head_sha=sha
            )
        if result_path not in self._tasks and self._claim(ci_dir / f"{sha}.run"):
            stored = _read(result_path)  # finished elsewhere between the two looks
            if stored is not None:
                (ci_dir / f"{sha}.run").unlink(missing_ok=True)
                return _from_result(pr, sha, stored, ci_dir / f"{sha}.log")
            task = asyncio.get_running_loop().create_task(
                self._run(sha, bare, ci_dir, scratch, argv), name=f"local-ci-{sha[:12]}"
            )
            self._tasks[result_path] = task
            task.add_done_callback(lambda t: self._done(result_path, t))
        return CiReport(pr, CiStatus.PENDING, url=str(ci_dir / f"{sha}.log"), head_sha=sha)

    async def wait_idle(self) -> None:
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await self.wait_idle()
        for bare, path in list(self._live):
            await remove_worktree(bare, path, self._count)
            self._live.discard((bare, path))

    def _claim(self, claim: Path) -> bool:
        claim.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(claim, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                if not self._stale(claim):
                    return False
                claim.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(str(os.getpid()))
            return True
        return False

    def _stale(self, claim: Path) -> bool:
        try:
            pid = int(claim.read_text().strip() or "0")
            age = time.time() - claim.stat().st_mtime
        except (OSError, ValueError):
            return True
        if age > self.timeout_s + CLAIM_GRACE_S or pid <= 0:
            return True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def _done(self, key: Path, task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("local CI run failed", exc_info=task.exception())

    async def _run(
        self, sha: str, bare: Path, ci_dir: Path, scratch: Path, argv: list[str]
    ) -> None:
        log_path = ci_dir / f"{sha}.log"
        try:
            async with self._sem:
                started, t0 = now_iso(), time.monotonic()
                tree = scratch / f"ci-{sha[:12]}-{secrets.token_hex(3)}"
                code: int | None = None
                try:
                    scratch.mkdir(parents=True, exist_ok=True)
                    self._live.add((bare, tree))
                    self._count()
                    try:
                        await git(bare, "worktree", "add", "--detach", str(tree), sha)
                    except CommandError as exc:
                        code = -1
                        log_path.write_text(f"[fleet] cannot check out {sha} for CI: {exc}\n")
                    else:
                        self._count()
                        code = await self._command(argv, bare, tree, log_path)
                        if code is None:
                            with log_path.open("a") as fh:
                                fh.write(f"\n[fleet] timed out after {self.timeout_s:g} s\n")
                finally:
                    await remove_worktree(bare, tree, self._count)
                    self._live.discard((bare, tree))
                write_json(
                    ci_dir / f"{sha}.json",
                    {
                        "sha": sha,
                        "status": "passing" if code == 0 else "failing",
                        "exit_code": code,
                        "timed_out": code is None,
                        "command": argv,
                        "log": str(log_path),
                        "started_at": started,
                        "finished_at": now_iso(),
                        "duration_s": round(time.monotonic() - t0, 3),
                    },
                )
        finally:
            (ci_dir / f"{sha}.run").unlink(missing_ok=True)

    async def _command(self, argv: list[str], bare: Path, tree: Path, log_path: Path) -> int | None:
        """The CI command on the PR head: in the agents' sandbox when there is one."""
        box = self.confinement
        if box is None or box.sandbox is None:
            return await run_to_log(argv, tree, log_path, self.timeout_s)
        await asyncio.to_thread(box.give, tree)
        try:
            result = await box.run(argv, cwd=tree, writable=[tree], readable=[bare],
                                   env={"CI": "true"}, timeout=self.timeout_s)  # fmt: skip
        except CommandError as exc:
            log_path.write_text(exc.output)
            return exc.returncode
        log_path.write_text(result.stdout + result.stderr)
        return 0


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _from_result(pr: int, sha: str, result: dict[str, Any], log_path: Path) -> CiReport:
    if result.get("status") == "passing":
        return CiReport(pr, CiStatus.PASSING, url=str(log_path), head_sha=sha)
    return CiReport(
        pr,
        CiStatus.FAILING,
        failing=("ci",),
        log_excerpt=log_tail(log_path) or f"exit code {result.get('exit_code')}, no output",
        url=str(log_path),
        head_sha=sha,
    )
