"""ContainerRuntime: the agent of a task in a hardened container, through the Docker Engine API.

Everything but the agent's process is local mode's (runtime/checkout_runtime.py, local.py): the
task's own checkout (a clone sharing the repository's objects), setup, the engine's pushes,
cleanup with snapshots, the kept log file. What differs is where the launcher runs: as the
container's PID 1 (`python3 -S launch.py /run/fleet`), in the agent's image, as a non-root user,
with the task's checkout and the agent's HOME as its only writable paths besides the run
directory (mounted at /run/fleet: the 0600 env and prompt files the launcher reads and deletes,
its `started` and `exit` records) and a tmpfs /tmp. Secrets and the prompt never enter the
create body.

The container (named like a tmux session, `fleet-<task id>`) stays after its agent ends, as a
pane does, until `kill` (stop: SIGTERM, grace, SIGKILL; then remove). Its output is followed from
the logs endpoint into the same kept log file (container_logs.py). The Docker Engine API calls
themselves are container_api.py's.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import shutil
from pathlib import Path
from typing import Any
from uuid import UUID

import aiodocker

from fleet_core.db.sysuser import RunAs
from fleet_core.errors import BadInputError, SpawnError
from fleet_core.models import AgentType
from fleet_core.runtime import container_api as api
from fleet_core.runtime import launch, wake
from fleet_core.runtime.adapters import Adapter
from fleet_core.runtime.container_body import container_argv, create_body, exit_from_state
from fleet_core.runtime.container_config import ContainerSettings
from fleet_core.runtime.container_logs import Followers
from fleet_core.runtime.docker_client import Daemon, DockerUnavailableError
from fleet_core.runtime.docker_images import image_tag
from fleet_core.runtime.echo import prompt_hashes
from fleet_core.runtime.handles import (
    GATE_MARGIN_S,
    START_TIMEOUT_S,
    AgentHandle,
    ExitStatus,
    SpawnSpec,
    record_fleet_kill,
    session_name,
)
from fleet_core.runtime.local import LocalRuntime
from fleet_core.runtime.runfiles import remove_dir, write_atomic, write_fields, write_private
from fleet_core.runtime.tmux import PaneState

log = logging.getLogger(__name__)

MARKER = "container"  # in the run directory: this task's agent runs in a container


class ContainerRuntime(LocalRuntime):
    def __init__(
        self,
        *args: Any,
        container: ContainerSettings | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.config = container or ContainerSettings()
        self.daemon = Daemon(self.config.docker_host)
        self._followers = Followers(on_end=functools.partial(wake.send, self.paths.runs))

    # -- the daemon --------------------------------------------------------------------------

    @property
    def docker_host(self) -> str:
        return self.daemon.host

    async def require_image(self, agent: AgentType) -> None:
        """The agent type's image exists on the daemon (no registry is ever pulled from)."""
        image = self.image_for(agent)
        try:
            await self.daemon.call("inspect the image", lambda d: d.images.inspect(image))
        except aiodocker.DockerError as exc:
            if exc.status != 404:
                raise
            raise BadInputError(
                "runtime",
                f"container mode: image {image} (for {agent.value}) does not exist on "
                f"{self.docker_host}: build it with `fleet image build --agent {agent.value}`",
            ) from None

    async def health(self) -> str | None:
        return await self.daemon.health()

    async def close(self) -> None:
        await self._followers.close()
        await self.daemon.close()

    # -- who the agent is --------------------------------------------------------------------

    @property
    def agent_owner(self) -> RunAs:
        """The container's user, who owns the checkout and HOME: the sandbox's agent user
        when there is one, else the configured uid:gid when fleet is root, else fleet's own."""
        if self.sandbox is not None and self.sandbox.run_as.uid:
            return self.sandbox.run_as
        if os.getuid() == 0:
            uid, gid = (int(x) for x in self.config.user.split(":"))
            return RunAs("container", uid, gid)
        return RunAs(None, os.getuid(), os.getgid())

    @property
    def isolation(self) -> str:
        return "container"

    def image_for(self, agent: AgentType) -> str:
        return self.config.images.get(agent.value) or image_tag(agent)

    def require_installed(self, agent: AgentType) -> None:
        """The agent's binary lives in its image, not on the engine's PATH."""
        if agent not in self.adapters:
            super().require_installed(agent)

    # -- spawn -------------------------------------------------------------------------------

    async def _launch(
        self, spec: SpawnSpec, adapter: Adapter, handle: AgentHandle, rd: Path, common: Path
    ) -> None:
        """The 0600 files in the run directory, then the container, started: its launcher
        waits for `go` like local mode's, while the checkout is cloned."""
        owner = self.agent_owner
        env = await self.secrets.issue(
            task_id=spec.task_id,
            operator_id=spec.operator_id,
            adapter=adapter,
            attempt=spec.attempt,
        )
        env = {"PYTHONUNBUFFERED": "1", **env}
        write_fields(rd / "env", [f"{k}={v}" for k, v in env.items()])
        write_atomic(rd / "prompt", spec.prompt.encode())
        gate_s = spec.setup_timeout_s + GATE_MARGIN_S
        argv = container_argv(adapter.argv(spec.model, launch.PROMPT_FILE))
        fields = [
            launch.SPEC_VERSION,
            str(gate_s),
            str(handle.worktree_path),
            str(spec.task_id),
            "",
            "",
            "",
            *argv,
        ]
        write_fields(rd / "spec", fields)
        write_atomic(rd / MARKER, session_name(spec.task_id).encode())
        self.paths.agent_logs.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(self.prompt_lines_path(spec.task_id), prompt_hashes(spec.prompt, spec.quoted))
        home = self._home(spec.operator_id, spec.agent_type)
        # Every bind's source exists before create (the daemon would make it root's), owned by
        # the container's user; the clone fills the checkout's directory meanwhile.
        handle.worktree_path.mkdir(parents=True, exist_ok=True, mode=0o755)
        for path in (rd, *rd.iterdir(), home):  # the clone hands the checkout over itself
            _chown(path, owner)
        body = self.create_body(spec, handle, rd, home, self._objects(common), owner)
        await api.create_and_start(self.daemon, handle.session, body, spec.agent_type)
        self._follow(spec.task_id, handle.session, fresh=True)

    def create_body(
        self,
        spec: SpawnSpec,
        handle: AgentHandle,
        rd: Path,
        home: Path,
        objects: list[Path],
        owner: RunAs,
    ) -> dict[str, Any]:
        return create_body(
            self.config, image=self.image_for(spec.agent_type), task_id=str(spec.task_id),
            operator_id=spec.operator_id, host_id=self.host_id,
            agent_type=spec.agent_type.value, checkout=handle.worktree_path, rd=rd, home=home,
            launcher=Path(launch.__file__).resolve(), objects=objects, owner=owner,
        )  # fmt: skip

    def _release(self, rd: Path, go: bool) -> None:
        """`go`, readable by the container's user (the launcher runs as that user)."""
        tmp = rd / "go.tmp"
        write_private(tmp, b"1" if go else b"0")
        _chown(tmp, self.agent_owner)
        os.replace(tmp, rd / "go")

    async def _wait_started(self, task_id: UUID, rd: Path) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT_S
        while loop.time() < deadline:
            if self._start_seen(task_id, rd):
                return
            state = await api.state(self.daemon, session_name(task_id))
            if state is None or state.get("Status") in ("exited", "dead"):
                if self._read_exit(task_id) is not None:
                    continue
                tail = await api.output_tail(self.daemon, session_name(task_id), 20)
                raise SpawnError("process", f"the container ended before the agent started: {tail}")
            await asyncio.sleep(0.01)
        raise SpawnError("process", f"the agent did not start within {START_TIMEOUT_S:.0f} s")

    async def _undo(self, handle: AgentHandle, *, checkout_created: bool) -> None:
        rd = self.run_dir(handle.task_id)
        try:
            if rd.is_dir():
                self._release(rd, False)
        except OSError as exc:
            log.error("undo of a failed spawn: release failed: %s", exc)
        await self._stop_follower(handle.task_id)
        try:
            await api.remove(self.daemon, handle.session)
        except Exception as exc:
            log.error(
                "undo of a failed spawn: removing container %s failed: %s",
                handle.session,
                exc,
                extra={"task": str(handle.task_id)},
            )
        if checkout_created and handle.worktree_path.exists():
            await asyncio.to_thread(shutil.rmtree, handle.worktree_path, True)
        remove_dir(rd)

    # -- observe -----------------------------------------------------------------------------

    async def exit_status(self, task_id: UUID) -> ExitStatus | None:
        """The launcher's record; else the container's own end (exit code, OOMKilled)."""
        status = self._read_exit(task_id)
        if status is None:
            state = await api.state(self.daemon, session_name(task_id))
            if state is None or state.get("Status") not in ("exited", "dead"):
                return None
            status = self._read_exit(task_id) or exit_from_state(state)
        await self._settle_log(task_id)
        return status

    async def is_alive(self, task_id: UUID) -> bool:
        if self._read_exit(task_id) is not None:
            return False
        state = await api.state(self.daemon, session_name(task_id))
        alive = state is not None and bool(state.get("Running"))
        if alive:
            self._follow(task_id, session_name(task_id))
        return alive

    async def agent_pid(self, task_id: UUID) -> int | None:
        """The running container's first process as this host sees it: only when the daemon
        runs here (its /proc entry is in the container's cgroup), never a remote daemon's."""
        if not self.docker_host.startswith("unix://"):
            return None
        doc = await api.inspect(self.daemon, session_name(task_id))
        st = (doc or {}).get("State") or {}
        pid, ident = int(st.get("Pid") or 0), str((doc or {}).get("Id") or "")
        if not st.get("Running") or pid <= 0 or not ident:
            return None
        return pid if await asyncio.to_thread(_in_cgroup_of, pid, ident) else None

    async def alive_tasks(self, panes: dict[UUID, PaneState] | None = None) -> set[UUID]:
        """The containers' tasks whose agent runs (`panes`, local mode's, do not apply)."""
        alive = set()
        for task_id in await api.host_tasks(self.daemon, self.host_id, running_only=True):
            if self._read_exit(task_id) is None:
                alive.add(task_id)
                self._follow(task_id, session_name(task_id))  # after an engine restart
        return alive

    async def list_active(self) -> list[UUID]:
        """The tasks of this host's containers, running or ended but not removed (reconcile
        reports one without a task; it never removes it)."""
        return await api.host_tasks(self.daemon, self.host_id, running_only=False)

    async def has_agent(self, task_id: UUID) -> bool:
        return await api.state(self.daemon, session_name(task_id)) is not None

    async def _live_output(self, task_id: UUID, lines: int) -> str:
        """The container's last lines, from the daemon, when no log file is kept."""
        return await api.output_tail(self.daemon, session_name(task_id), lines)

    def attach_command(self, task_id: UUID) -> list[str]:
        """Watch the agent's output (its stdin is the prompt: there is nothing to type into)."""
        return ["docker", "-H", self.docker_host, "logs", "--follow", session_name(task_id)]

    # -- the kept log ------------------------------------------------------------------------

    def _follow(self, task_id: UUID, name: str, *, fresh: bool = False) -> None:
        """Follow the container's output into the kept log: from its start for a new
        container, else (an engine restarted beside it) after the last entry written."""
        docker = self.daemon.current
        if docker is not None:
            mark = self.run_dir(task_id) / "log-since"
            path = self.log_path(task_id)
            self._followers.start(task_id, docker, name, path, mark, resume=not fresh)

    async def _settle_log(self, task_id: UUID) -> None:
        await self._followers.settle(task_id)

    async def _stop_follower(self, task_id: UUID) -> None:
        await self._followers.stop(task_id)

    # -- stop --------------------------------------------------------------------------------

    async def kill(self, task_id: UUID, grace_s: float | None = None) -> bool:
        """SIGTERM (the launcher forwards it), SIGKILL after the grace period, then the
        container is removed. False when there was no container."""
        name = session_name(task_id)
        try:
            state = await api.state(self.daemon, name)
        except DockerUnavailableError:
            log.warning("cannot stop container %s: the daemon does not answer", name)
            raise
        if state is None:
            await self._stop_follower(task_id)
            return False
        if state.get("Running"):
            grace = self.config.stop_grace_seconds
            grace = self.kill_grace_s if grace is None else grace
            grace = grace if grace_s is None else grace_s
            await api.stop(self.daemon, name, grace)
            after = await api.state(self.daemon, name)
            rd = self.run_dir(task_id)
            if (after or {}).get("ExitCode") == 137 and rd.is_dir() and not (rd / "exit").exists():
                record_fleet_kill(rd)
        await self._stop_follower(task_id)
        await api.remove(self.daemon, name)
        return True


def _chown(path: Path, owner: RunAs) -> None:
    if owner.uid is not None and os.getuid() == 0:
        os.chown(path, owner.uid, owner.gid if owner.gid is not None else owner.uid)


def _in_cgroup_of(pid: int, container_id: str) -> bool:
    """Whether this host's process `pid` is in the container's cgroup (a daemon in a VM or
    another PID namespace reports pids that mean something else here)."""
    try:
        with open(f"/proc/{pid}/cgroup") as fh:
            return container_id in fh.read()
    except OSError:
        return False
