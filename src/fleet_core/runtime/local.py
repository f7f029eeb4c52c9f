"""LocalRuntime: an agent per task in its own git worktree, running in tmux under the launcher.

The handle a spawn returns (tmux session, worktree path, host id) is what the caller stores
on the task; every later operation works from the task id alone, so the runtime finds its
agents again after a restart.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from fleet_core.config import Settings
from fleet_core.db.sysuser import RunAs
from fleet_core.errors import BadInputError, SpawnError
from fleet_core.models import AgentType
from fleet_core.runtime import agent_log, launch, limits, sessions
from fleet_core.runtime import checkout as co
from fleet_core.runtime import git as g
from fleet_core.runtime.adapters import Adapter
from fleet_core.runtime.cleanup import CleanupResult, remove_checkout
from fleet_core.runtime.contained import Confinement
from fleet_core.runtime.echo import prompt_hashes
from fleet_core.runtime.groups import terminate_group
from fleet_core.runtime.heads import BranchHeads
from fleet_core.runtime.proc import CommandError
from fleet_core.runtime.runfiles import (
    release,
    remove_dir,
    write_atomic,
    write_fields,
    write_private,
)
from fleet_core.runtime.sandbox import BASE_PATH, Sandbox
from fleet_core.runtime.secrets import SecretProvider
from fleet_core.runtime.tmux import SESSION_PREFIX, PaneState, Tmux
from fleet_core.runtime.validation import path_under, validate_branch

DEFAULT_LOG_LINES = 100
MAX_LOG_LINES = 1000
START_TIMEOUT_S = 10.0
START_POLL_MIN_S = 0.002  # the first wait for the launcher's `started`, doubled each time
START_POLL_MAX_S = 0.05
START_PANE_AFTER_S = 0.2  # from then on, whether the launcher still runs (a tmux call)
START_PANE_EVERY_S = 0.25
GATE_MARGIN_S = 60.0  # how long a launcher waits for `go` beyond the setup timeout
OOM_EXIT = 137

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RuntimePaths:
    data_dir: Path
    worktrees: Path

    @classmethod
    def under(cls, data_dir: Path, worktrees: Path | None = None) -> RuntimePaths:
        return cls(data_dir, worktrees or data_dir / "worktrees")

    @classmethod
    def from_settings(cls, settings: Settings) -> RuntimePaths:
        return cls.under(settings.data_dir, settings.worktree_dir)

    @property
    def runs(self) -> Path:
        return self.data_dir / "run"

    @property
    def snapshots(self) -> Path:
        return self.data_dir / "snapshots"

    @property
    def agent_logs(self) -> Path:
        """Each agent's output (`<task id>.log`, rotated to `.log.1`), kept past its session."""
        return self.data_dir / "agent-logs"

    @property
    def homes(self) -> Path:
        """Agents' persistent HOMEs, one per operator and agent type (their CLIs' logins)."""
        return self.data_dir / "homes"

    @property
    def tmux_socket(self) -> str:
        return "fleet-" + hashlib.sha256(str(self.data_dir.resolve()).encode()).hexdigest()[:12]


@dataclass(frozen=True)
class SpawnSpec:
    task_id: UUID
    operator_id: str
    repository: Path
    branch: str
    agent_type: AgentType
    model: str
    prompt: str
    base_branch: str | None = None
    attempt: int = 1
    setup: list[str] | None = None
    setup_timeout_s: float = 600.0
    sandbox: str | None = None  # how an earlier attempt ran: "bwrap" binds this one too
    quoted: tuple[str, ...] = ()  # lines the prompt quotes of earlier output: never its echo
    runtime: str = "local"  # "container": runtime/container.py runs it (see runtime/modes.py)


@dataclass(frozen=True)
class AgentHandle:
    task_id: UUID
    session: str
    worktree_path: Path
    branch: str
    host_id: str
    base_ref: str
    sandbox: str = "none"  # "bwrap" when the agent runs in the sandbox


@dataclass(frozen=True)
class ExitStatus:
    code: int
    signal: str | None
    ended_at: datetime | None
    error: str | None = None
    killed_by_fleet: bool = False

    @property
    def oom(self) -> bool:
        """137 = SIGKILL; unless fleet itself sent it, that is the OOM killer."""
        return self.code == OOM_EXIT and not self.killed_by_fleet


def agent_home(paths: RuntimePaths, operator_id: str, agent: AgentType, owner: RunAs) -> Path:
    """The operator's persistent HOME for one agent type (its CLI's login), made on first use
    and owned by the agent user."""
    home = path_under(paths.homes, operator_id, field="operator_id") / agent.value
    if not home.is_dir():
        home.mkdir(parents=True, mode=0o700)
        if owner.uid is not None:
            os.chown(home, owner.uid, owner.gid or 0)
    return home


def session_name(task_id: UUID) -> str:
    return f"{SESSION_PREFIX}{task_id}"


def task_of(session: str) -> UUID | None:
    """The task id of one of our session names; None for any other session."""
    if not session.startswith(SESSION_PREFIX):
        return None
    try:
        return UUID(session[len(SESSION_PREFIX) :])
    except ValueError:
        return None


class LocalRuntime:
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

    def run_dir(self, task_id: UUID) -> Path:
        return path_under(self.paths.runs, str(task_id), field="task_id")

    def log_path(self, task_id: UUID) -> Path:
        return path_under(self.paths.agent_logs, f"{task_id}.log", field="task_id")

    def prompt_lines_path(self, task_id: UUID) -> Path:
        """Hashes of the prompt's lines (never its text): what an agent echoes of it is cut
        from the failure context and the retry prompt."""
        return path_under(self.paths.agent_logs, f"{task_id}.prompt", field="task_id")

    def installed(self) -> dict[AgentType, str | None]:
        """Each configured agent type's binary as found on PATH (None: not installed)."""
        return {agent: shutil.which(a.binary) for agent, a in self.adapters.items()}

    def require_installed(self, agent: AgentType) -> None:
        """BadInputError naming the binary and the agents that are installed, unless the
        agent's binary is on PATH."""
        adapter = self.adapters.get(agent)
        if adapter is None:
            raise BadInputError("agent_type", f"no command configured for {agent.value}")
        if shutil.which(adapter.binary) is None:
            found = sorted(a.value for a, exe in self.installed().items() if exe)
            raise BadInputError(
                "agent_type",
                f"{adapter.binary} (for {agent.value}) is not installed: not on PATH; "
                f"installed: {', '.join(found) or 'none'}",
            )

    # -- spawn -------------------------------------------------------------------------------

    async def respawn(self, spec: SpawnSpec) -> AgentHandle:
        """Another attempt at the same task: the old session and run files go; the worktree
        and branch, with the previous attempt's work, stay and are reused."""
        await self.kill(spec.task_id)
        remove_dir(self.run_dir(spec.task_id))
        limits.remove(spec.task_id)
        return await self.spawn(spec, resume=True)

    async def spawn(self, spec: SpawnSpec, *, resume: bool = False) -> AgentHandle:
        """The task's own checkout (a clone sharing the repository's objects) on a new branch
        from the base, optional setup, then the agent in tmux (in the sandbox when there is one).

        The tmux session and its launcher start while the clone is made; the launcher waits
        for the `go` file, written once the checkout (and setup) are ready. Everything created
        is removed again when a step fails. With `resume`, the task's existing checkout is
        used (or a new one on the branch its earlier attempt published), never removed on
        failure."""
        validate_branch(spec.branch)
        adapter = self.adapters.get(spec.agent_type)
        if adapter is None:
            raise BadInputError("agent_type", f"no command configured for {spec.agent_type.value}")
        if spec.base_branch:
            validate_branch(spec.base_branch, "base_branch")
        if spec.sandbox == "bwrap" and self.sandbox is None:
            raise SpawnError(
                "sandbox",
                f"this task ran in the sandbox and never continues without it; here agents "
                f"run unsandboxed ({self.unsandboxed_reason})",
            )
        base = spec.base_branch or await self._default_branch(spec.repository)
        located, resolved = await asyncio.gather(
            g.repo_paths(spec.repository), g.base_ref(spec.repository, base), return_exceptions=True
        )
        if isinstance(located, BaseException):
            raise located
        if isinstance(resolved, BaseException):
            raise resolved
        repo, common = located
        base_ref = resolved
        if not resume and await g.ref_exists(repo, f"refs/heads/{spec.branch}"):
            raise BadInputError("branch", f"{spec.branch!r} already exists")
        checkout = path_under(self.paths.worktrees, str(spec.task_id), field="worktree")
        rd = self.run_dir(spec.task_id)
        if rd.exists() or (checkout.exists() and not resume):
            raise BadInputError("task_id", f"{spec.task_id} was already spawned here")
        handle = AgentHandle(
            spec.task_id, session_name(spec.task_id), checkout, spec.branch, self.host_id,
            base_ref, self.isolation,
        )  # fmt: skip
        rd.mkdir(parents=True, mode=0o700)
        reuse = resume and checkout.is_dir()
        if reuse:
            prepare = _nothing()
        else:
            start = base_ref
            if resume and await g.ref_exists(repo, f"refs/heads/{spec.branch}"):
                start = f"refs/heads/{spec.branch}"  # the earlier attempt's published work
            prepare = self._clone(repo, spec.branch, checkout, start)
        results = await asyncio.gather(
            prepare, self._launch(spec, adapter, handle, rd, common), return_exceptions=True
        )
        try:
            for outcome in results:
                if isinstance(outcome, BaseException):
                    raise outcome
            if spec.setup:
                await self._setup(checkout, common, spec.setup, spec.setup_timeout_s)
            self._release(rd, True)
            await self._wait_started(spec.task_id, rd)
        except BaseException:
            await self._undo(handle, checkout_created=not reuse)
            raise
        return handle

    async def _default_branch(self, path: Path) -> str:
        """Cached per repository path: it changes rarely, and each probe is a git call."""
        if path not in self._default_branches:
            if not path.is_dir():
                raise BadInputError("repository", f"{path} is not a directory")
            self._default_branches[path] = await g.default_branch(path)
        return self._default_branches[path]

    async def _clone(self, repo: Path, branch: str, checkout: Path, start: str) -> None:
        self.paths.worktrees.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            await co.create(repo, checkout, branch, start, self.agent_owner)
        except CommandError as exc:
            raise SpawnError("checkout", str(exc), output=exc.output) from None

    @property
    def isolation(self) -> str:
        """What the task records as its `sandbox`: how its agent is walled in."""
        return "bwrap" if self.sandbox else "none"

    @property
    def agent_owner(self) -> RunAs:
        """Who owns checkouts and HOMEs: the agent user when fleet runs as root."""
        return self.sandbox.run_as if self.sandbox else RunAs()

    def _objects(self, common: Path) -> list[Path]:
        """The repository's object store, which a shared clone reads (bound read-only)."""
        return [(common / "objects").resolve()]

    async def _setup(self, checkout: Path, common: Path, argv: list[str], timeout: float) -> None:
        """The repository's setup command, in the task's checkout, in the sandbox, with the
        base environment only."""
        try:
            await self.confinement.run(
                argv,
                cwd=checkout,
                writable=[checkout],
                readable=self._objects(common),
                timeout=timeout,
            )
        except CommandError as exc:
            raise SpawnError("setup", str(exc), output=exc.output) from None
        except OSError as exc:
            raise SpawnError("setup", f"cannot run {argv[0]}: {exc}") from None

    def _home(self, operator_id: str, agent: AgentType) -> Path:
        return agent_home(self.paths, operator_id, agent, self.agent_owner)

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
            if (rd / "started").exists():
                return
            status = self._read_exit(task_id)
            if status is not None and status.error:
                raise SpawnError("process", f"the agent could not start: {status.error}")
            if status is not None:
                return  # started and already finished
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
        """The launcher's (or kill's) exit record; None while there is none. Both write it
        whole (temp file + rename), but a file that is cut short or garbled (a full disk, a
        crash of an older version) is read as not written yet rather than raising: the pane's
        own state then decides."""
        try:
            text = (self.run_dir(task_id) / "exit").read_text()
        except (OSError, ValueError):
            return None
        if not text.endswith("\n"):
            return None  # every record ends with a newline: this one was cut short
        doc = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
        ended = doc.get("ended_at")
        try:
            return ExitStatus(
                code=int(doc["exit_code"]),
                signal=doc.get("signal") or None,
                ended_at=datetime.fromisoformat(ended) if ended else None,
                error=doc.get("error") or None,
                killed_by_fleet=doc.get("killed_by") == "fleet",
            )
        except (KeyError, ValueError):
            return None

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
                # SIGKILL took the launcher too: record the exit it could not, whole.
                stamp = datetime.now(UTC).isoformat()
                write_atomic(rd / "exit", f"exit_code=137\nsignal=SIGKILL\nended_at={stamp}\n"
                              "killed_by=fleet\n".encode())  # fmt: skip
        await self.tmux.kill_session(name)
        return True

    async def diff_against(self, repository: Path, checkout: Path, sha: str) -> str:
        """The checkout's working tree against `sha`, read as the agent (see as_agent)."""
        _, common = await g.repo_paths(repository)
        out = await co.as_agent(self.confinement, checkout, self._objects(common), "diff",
                                "--no-ext-diff", "--no-textconv", sha, "--", ".",
                                check=False)  # fmt: skip
        return out.stdout

    async def publish(self, repository: Path, task_id: UUID, branch: str) -> bool:
        """Push the task's branch when its checkout has a commit not pushed yet (the agent
        commits; the engine pushes). True when it pushed."""
        checkout = path_under(self.paths.worktrees, str(task_id), field="worktree")
        if not checkout.is_dir():
            return False
        sha = await self.heads.head(task_id, checkout, branch)
        if sha is None or self._published.get(task_id) == sha:
            return False
        repo, common = await g.repo_paths(repository)
        # One publisher per repository at a time, across engines sharing this data dir: two
        # fetches into one ref would fail each other's ref lock.
        async with self.locks.hold(repo, common):
            await co.publish(self.paths.data_dir, repo, checkout, branch)
        self._published[task_id] = sha
        return True

    async def cleanup(
        self, task_id: UUID, repository: Path, branch: str, base_branch: str | None = None
    ) -> CleanupResult:
        """Kill what still runs, snapshot unpushed or uncommitted work, remove the checkout,
        delete the branch only if merged into its base, and drop the run directory."""
        await self.kill(task_id)
        repo, common = await g.repo_paths(repository)
        base_ref = await g.base_ref(repo, base_branch or await g.default_branch(repo))
        checkout = path_under(self.paths.worktrees, str(task_id), field="worktree")
        result = await remove_checkout(
            self.confinement, repo, checkout, self._objects(common), branch, base_ref,
            self.paths.snapshots,
        )  # fmt: skip
        remove_dir(self.run_dir(task_id))
        limits.remove(task_id)
        self._published.pop(task_id, None)
        self.heads.forget(task_id)
        return result


def _runtime_of(agent: AgentType) -> list[Path]:
    """What an agent needs to see that may live in a hidden place: the demo agent is fleet's
    own Python (a venv under /root, say)."""
    if agent is not AgentType.DEMO:
        return []
    here = Path(__file__).resolve().parent.parent
    found = {Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), here}
    return sorted(found)


async def _nothing() -> None:
    return None
