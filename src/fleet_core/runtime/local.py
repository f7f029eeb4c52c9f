"""LocalRuntime: an agent per task in its own git worktree, running in tmux under the launcher.

The handle a spawn returns (tmux session, worktree path, host id) is what the caller stores
on the task; every later operation works from the task id alone, so the runtime finds its
agents again after a restart. This module is the process half (the launcher in tmux, in the
sandbox when there is one: start, observe, kill); the checkout half (spawn's order of steps,
setup, pushes, cleanup) is checkout_runtime.py's, shared with container mode.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sys
import time
from pathlib import Path
from uuid import UUID

from fleet_core.errors import BadInputError, SpawnError
from fleet_core.models import AgentType
from fleet_core.runtime import agent_log, launch, limits, sessions
from fleet_core.runtime import git as g
from fleet_core.runtime.adapters import Adapter
from fleet_core.runtime.checkout_runtime import CheckoutRuntime
from fleet_core.runtime.contained import Confinement
from fleet_core.runtime.echo import prompt_hashes
from fleet_core.runtime.groups import terminate_group
from fleet_core.runtime.handles import (
    DEFAULT_LOG_LINES,
    GATE_MARGIN_S,
    MAX_LOG_LINES,
    START_TIMEOUT_S,
    AgentHandle,
    ExitStatus,
    SpawnSpec,
    read_exit,
    record_fleet_kill,
    session_name,
    task_of,
)
from fleet_core.runtime.heads import BranchHeads
from fleet_core.runtime.paths import RuntimePaths
from fleet_core.runtime.runfiles import (
    release,
    remove_dir,
    write_atomic,
    write_fields,
    write_private,
)
from fleet_core.runtime.sandbox import BASE_PATH, Sandbox
from fleet_core.runtime.secrets import SecretProvider
from fleet_core.runtime.tmux import PaneState, Tmux

# ExitStatus, session_name, RuntimePaths and agent_home are named here again for monitor.py and
# review/cli.py, which import them from this module (their areas are another branch's); all
# other code imports them from handles.py and paths.py.
START_POLL_MIN_S = 0.002  # the first wait for the launcher's `started`, doubled each time
START_POLL_MAX_S = 0.05
START_PANE_AFTER_S = 0.2  # from then on, whether the launcher still runs (a tmux call)
START_PANE_EVERY_S = 0.25

log = logging.getLogger(__name__)


class LocalRuntime(CheckoutRuntime):
    def __init__(
        self,
        paths: RuntimePaths,
        adapters: dict[AgentType, Adapter],
        secrets: SecretProvider,
        *,
        host_id: str,
        kill_grace_s: float = 5.0,
        sandbox: Sandbox | None = None,
        unsandboxed_reason: str | None = None,
        agent_limits: limits.AgentLimits | None = None,
    ) -> None:
        self.paths = paths
        self.adapters = adapters
        self.secrets = secrets
        self.host_id = host_id
        self.kill_grace_s = kill_grace_s
        self.sandbox = sandbox
        self.confinement = Confinement(sandbox, paths.data_dir)
        self.limits = agent_limits or limits.AgentLimits()
        # Why agents run without a sandbox (None when they run in one): shown, never silent.
        self.unsandboxed_reason = None if sandbox else (unsandboxed_reason or "sandbox off")
        self.tmux = Tmux(paths.tmux_socket, paths.data_dir / "tmux.conf")
        self._default_branches: dict[Path, str] = {}
        self._published: dict[UUID, str] = {}  # task -> the last commit pushed
        self.heads = BranchHeads(paths.data_dir)  # tasks' branch tips, read when they moved
        self.locks = g.RepoLocks(paths.data_dir / "locks")

    async def _launch(
        self, spec: SpawnSpec, adapter: Adapter, handle: AgentHandle, rd: Path, common: Path
    ) -> None:
        """Secrets, the 0600 files and the tmux session whose launcher waits for `go`."""
        env = await self.secrets.issue(
            task_id=spec.task_id, operator_id=spec.operator_id, adapter=adapter,
            attempt=spec.attempt,
        )  # fmt: skip
        argv = adapter.argv(spec.model)
        exe = shutil.which(argv[0])
        if exe is None:
            raise SpawnError(
                "not_installed", f"cannot start {argv[0]}: not installed (not on PATH)"
            )
        slirp = seccomp = ""
        if self.sandbox is not None:
            # By its absolute path, with its own directory first on PATH (a Node CLI's `node`
            # lives beside it in an nvm or npm prefix), since the sandbox's PATH is the base one.
            argv = [exe, *argv[1:]]
            env = self.sandbox.env({**env, "PATH": f"{Path(exe).parent}:{BASE_PATH}"})
            argv = self.sandbox.wrap(
                argv, cwd=handle.worktree_path, writable=[handle.worktree_path],
                readable=self._objects(common) + _runtime_of(spec.agent_type),
                home=self._home(spec.operator_id, spec.agent_type),
            )  # fmt: skip
            slirp = self.sandbox.slirp_path or ""
            seccomp = str(self.confinement.seccomp)
        write_fields(rd / "env", [f"{k}={v}" for k, v in env.items()])
        write_private(rd / "prompt", spec.prompt.encode())
        gate_s = spec.setup_timeout_s + GATE_MARGIN_S
        cwd = handle.worktree_path if self.sandbox is None else Path("/")
        cgroups = "\n".join(map(str, limits.create(spec.task_id, self.limits)))
        write_fields(
            rd / "spec",
            [
                launch.SPEC_VERSION,
                str(gate_s),
                str(cwd),
                str(spec.task_id),
                slirp,
                seccomp,
                cgroups,
                *argv,
            ],
        )
        # The launcher needs only the standard library: run its file without `site`.
        launcher = [sys.executable, "-S", launch.__file__, str(rd)]
        self.paths.agent_logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        echo = prompt_hashes(spec.prompt, spec.quoted)
        write_atomic(self.prompt_lines_path(spec.task_id), echo)
        try:
            await self.tmux.new_session(handle.session, rd, launcher)
            # The output's file, from the first byte: the launcher prints nothing and starts
            # no agent until `go`, which is written after this.
            await self.tmux.pipe_pane(
                handle.session, agent_log.pipe_command(self.log_path(spec.task_id))
            )
        except Exception as exc:
            raise SpawnError("process", f"tmux could not start the launcher: {exc}") from None

    def _release(self, rd: Path, go: bool) -> None:
        release(rd, go)

    async def _wait_started(self, task_id: UUID, rd: Path) -> None:
        """Until the launcher records `started` (or an exit). Its files are looked at often at
        first (an agent usually starts within milliseconds), then less (the wait grows to
        START_POLL_MAX_S); whether the launcher itself still runs costs a tmux call, asked at
        most every START_PANE_EVERY_S once the start is slow."""
        begin = time.monotonic()
        deadline = begin + START_TIMEOUT_S
        wait, next_pane = START_POLL_MIN_S, begin + START_PANE_AFTER_S
        while time.monotonic() < deadline:
            if self._start_seen(task_id, rd):
                return
            if time.monotonic() >= next_pane:
                next_pane = time.monotonic() + START_PANE_EVERY_S
                pane = await self.tmux.pane(session_name(task_id))
                if pane is None or pane.dead:
                    tail = await self.tmux.capture(session_name(task_id), 20) if pane else ""
                    raise SpawnError(
                        "process", f"the launcher ended before the agent started: {tail}"
                    )
            await asyncio.sleep(wait)
            wait = min(wait * 2, START_POLL_MAX_S)
        raise SpawnError("process", f"the agent did not start within {START_TIMEOUT_S:.0f} s")

    async def _undo(self, handle: AgentHandle, *, checkout_created: bool) -> None:
        """Remove what a failed spawn created. Every step runs whatever the others did, and
        each failure is logged (with the task, the step and the error): a checkout left
        behind must never go unnoticed."""
        rd = self.run_dir(handle.task_id)
        extra = {"task": str(handle.task_id), "branch": handle.branch}

        def failed(step: str, error: object) -> None:
            log.error("undo of a failed spawn: %s failed: %s", step, error,
                      extra={**extra, "step": step})  # fmt: skip

        try:
            release(rd, False)  # a waiting launcher exits without starting
        except OSError as exc:
            failed("release the launcher", exc)
        try:
            await self.tmux.kill_session(handle.session)
        except Exception as exc:
            failed("kill the tmux session", exc)
        if checkout_created and handle.worktree_path.exists():
            try:
                await asyncio.to_thread(shutil.rmtree, handle.worktree_path)
            except OSError as exc:
                failed("remove the checkout", exc)
        try:
            remove_dir(rd)
        except OSError as exc:
            failed("remove the run directory", exc)
        limits.remove(handle.task_id)

    # -- observe -----------------------------------------------------------------------------

    def _read_exit(self, task_id: UUID) -> ExitStatus | None:
        """The launcher's (or kill's) exit record; None while there is none (handles.py)."""
        return read_exit(self.run_dir(task_id))

    def _start_seen(self, task_id: UUID, rd: Path) -> bool:
        """The launcher recorded `started`, or an exit (the agent started and already ended);
        SpawnError when the record says the agent could not start."""
        if (rd / "started").exists():
            return True
        status = self._read_exit(task_id)
        if status is not None and status.error:
            raise SpawnError("process", f"the agent could not start: {status.error}")
        return status is not None

    async def exit_status(self, task_id: UUID) -> ExitStatus | None:
        """The agent's exit, once it has ended (from the launcher's record, else tmux's)."""
        status = self._read_exit(task_id)
        if status is not None:
            return status
        pane = await self.tmux.pane(session_name(task_id))
        if pane is not None and pane.dead:
            # The launcher writes its record before it ends: one written while tmux was
            # asked is there now (without this second look, the race reads exit -1).
            status = self._read_exit(task_id)
            if status is not None:
                return status
            return ExitStatus(pane.dead_status if pane.dead_status is not None else -1, None, None)
        return None

    async def is_alive(self, task_id: UUID) -> bool:
        """The agent process runs: the session exists, its pane is not dead, no exit recorded."""
        if self._read_exit(task_id) is not None:
            return False
        pane = await self.tmux.pane(session_name(task_id))
        return pane is not None and not pane.dead

    async def task_panes(self) -> dict[UUID, PaneState]:
        """Each agent session's pane, by task, in one tmux call (for the monitor's cycle)."""
        panes = await self.tmux.panes()
        return {tid: pane for name, pane in panes.items() if (tid := task_of(name)) is not None}

    async def agent_pid(self, task_id: UUID) -> int | None:
        """None: a local agent's pid is its pane's, which the monitor reads once per cycle
        for all of them (task_panes)."""
        return None

    async def alive_tasks(self, panes: dict[UUID, PaneState] | None = None) -> set[UUID]:
        """The tasks whose agent runs, in one tmux call (or from `panes`, read already)."""
        if panes is None:
            panes = await self.task_panes()
        return {t for t, pane in panes.items() if not pane.dead and self._read_exit(t) is None}

    async def output_settled(self, task_id: UUID) -> bool:
        """Wait (bounded) until an ended agent's last output is in its log file."""
        return await sessions.output_settled(self.log_path(task_id))

    async def remove_finished_session(
        self, task_id: UUID, *, force: bool = False, exiting: bool = False
    ) -> bool:
        """Remove the task's dead session once its output is kept in the log file (with
        `exiting`, its launcher is ending: its pane is waited for, briefly)."""
        return await sessions.remove_finished(
            self.tmux, session_name(task_id), self.log_path(task_id), force=force,
            wait_s=sessions.EXITING_S if exiting else 0.0,
        )  # fmt: skip

    async def logs(self, task_id: UUID, lines: int = DEFAULT_LOG_LINES) -> str:
        """The last `lines` readable lines of the agent's output: from its kept log file
        (after the session too), else from the pane."""
        if not 1 <= lines <= MAX_LOG_LINES:
            raise BadInputError("lines", f"must be between 1 and {MAX_LOG_LINES}")
        kept = await asyncio.to_thread(agent_log.read_tail, self.log_path(task_id), lines)
        if kept is not None:
            return "\n".join(kept)
        return await self._live_output(task_id, lines)

    async def _live_output(self, task_id: UUID, lines: int) -> str:
        """The agent's last lines from where it runs (its pane) when no log file is kept."""
        return await self.tmux.capture(session_name(task_id), lines)

    def prompt_hashes(self, task_id: UUID) -> frozenset[str]:
        try:
            text = self.prompt_lines_path(task_id).read_text()
        except OSError:
            return frozenset()
        return frozenset(text.split())

    def forget_logs(self, task_id: UUID) -> None:
        """Remove the task's kept output (when the task itself is deleted)."""
        log_file = self.log_path(task_id)
        for path in (log_file, log_file.with_name(log_file.name + ".1"),
                     self.prompt_lines_path(task_id)):  # fmt: skip
            path.unlink(missing_ok=True)

    async def list_active(self) -> list[UUID]:
        """Task ids of the sessions on our own socket (never the user's tmux)."""
        ids = [task_of(name) for name in await self.tmux.list_sessions()]
        return [i for i in ids if i is not None]

    def attach_command(self, task_id: UUID) -> list[str]:
        return self.tmux.attach_command(session_name(task_id))

    # -- stop and clean up -------------------------------------------------------------------

    async def kill(self, task_id: UUID, grace_s: float | None = None) -> bool:
        """SIGTERM to the agent's process group, SIGKILL after the grace period, then the
        session is removed. False when there was no session."""
        name = session_name(task_id)
        pane = await self.tmux.pane(name)
        if pane is None:
            return False
        if not pane.dead and pane.pid:
            forced = await terminate_group(
                pane.pid, self.kill_grace_s if grace_s is None else grace_s
            )
            rd = self.run_dir(task_id)
            if forced and rd.is_dir() and not (rd / "exit").exists():
                record_fleet_kill(rd)  # SIGKILL took the launcher too: the exit it could not
        await self.tmux.kill_session(name)
        return True


def _runtime_of(agent: AgentType) -> list[Path]:
    """What an agent needs to see that may live in a hidden place: the demo agent is fleet's
    own Python (a venv under /root, say)."""
    if agent is not AgentType.DEMO:
        return []
    here = Path(__file__).resolve().parent.parent
    found = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), here}
    return sorted(found)
