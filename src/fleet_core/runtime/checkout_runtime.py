"""The half of a runtime that owns a task's checkout: spawn's order of steps (the checkout, a
clone sharing the repository's objects, made while the agent's launcher starts; the setup
command; `go`), another attempt on the same checkout, the engine's pushes, a diff read as the
agent, and cleanup with snapshots. Where the agent's process runs is the other half's: local
mode's tmux (local.py) or a container (container.py) implement the abstract steps."""

from __future__ import annotations

import asyncio
import shutil
from abc import ABC, abstractmethod
from pathlib import Path
from uuid import UUID

from fleet_core.db.sysuser import RunAs
from fleet_core.errors import BadInputError, SpawnError
from fleet_core.models import AgentType
from fleet_core.runtime import checkout as co
from fleet_core.runtime import git as g
from fleet_core.runtime import limits
from fleet_core.runtime.adapters import Adapter
from fleet_core.runtime.cleanup import CleanupResult, remove_checkout
from fleet_core.runtime.contained import Confinement
from fleet_core.runtime.handles import AgentHandle, SpawnSpec, session_name
from fleet_core.runtime.heads import BranchHeads
from fleet_core.runtime.paths import RuntimePaths, agent_home
from fleet_core.runtime.proc import CommandError
from fleet_core.runtime.runfiles import remove_dir
from fleet_core.runtime.sandbox import Sandbox
from fleet_core.runtime.secrets import SecretProvider
from fleet_core.runtime.validation import path_under, validate_branch


class CheckoutRuntime(ABC):
    """Its state is set by the concrete runtime's __init__ (LocalRuntime's)."""

    paths: RuntimePaths
    adapters: dict[AgentType, Adapter]
    secrets: SecretProvider
    host_id: str
    sandbox: Sandbox | None
    confinement: Confinement
    unsandboxed_reason: str | None
    heads: BranchHeads  # tasks' branch tips, read when they moved
    locks: g.RepoLocks
    _default_branches: dict[Path, str]
    _published: dict[UUID, str]  # task -> the last commit pushed

    # -- the process half ----------------------------------------------------------------------

    @abstractmethod
    async def _launch(
        self, spec: SpawnSpec, adapter: Adapter, handle: AgentHandle, rd: Path, common: Path
    ) -> None:
        """The run directory's files and the agent's launcher, started, waiting for `go`."""

    @abstractmethod
    def _release(self, rd: Path, go: bool) -> None: ...

    @abstractmethod
    async def _wait_started(self, task_id: UUID, rd: Path) -> None: ...

    @abstractmethod
    async def _undo(self, handle: AgentHandle, *, checkout_created: bool) -> None: ...

    @abstractmethod
    async def kill(self, task_id: UUID, grace_s: float | None = None) -> bool: ...

    # -- files and binaries ------------------------------------------------------------------

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

    # -- the engine's side of the checkout ---------------------------------------------------

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


async def _nothing() -> None:
    return None
