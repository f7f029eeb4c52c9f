"""Container mode on the real Docker daemon: the demo agent's image (built here without a
registry: a debootstrapped base imported through the Engine API, once per machine, kept by its
tag), a task from spawn to merged on the local forge, the inspected create body, stop.

Without a daemon these tests skip, saying why; under CI=true they fail instead."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from conftest import Pg, eventually, fleet, git, holds
from fleet_core.conductor import Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database
from fleet_core.errors import BadInputError, ConfigError, SpawnError
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import AgentType, SpawnRequest
from fleet_core.monitor import MonitorConfig
from fleet_core.overview import fleet_overview
from fleet_core.runtime import docker_client, docker_images
from lifecycle_support import ACTOR, FAST, conductors, spawn, until_status

SECRET = "demo-secret-value-7f3a9c"
HERE = Path(__file__).parent
HOST = f"test-host-{os.getpid()}"  # the label fleet.host of this run's containers


async def _prepare() -> str:
    async with docker_client.client() as docker:
        await docker_images.ensure_base(docker)
        return await docker_images.build(docker, AgentType.DEMO)


@pytest.fixture(scope="session")
def demo_image() -> Iterator[str]:
    """The demo agent's image; the base is made only when its tag is missing."""
    try:
        tag = asyncio.run(_prepare())
    except docker_client.DockerUnavailableError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and container mode cannot be tested: {exc}")
        pytest.skip(f"container tests need a Docker daemon: {exc}")
    yield tag


def settings_for(tmp_path: Path, **kw: Any) -> Settings:
    return Settings(**fields_for(tmp_path, **kw))


def fields_for(tmp_path: Path, **kw: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "host_id": HOST,
        "secrets": {"FLEET_DEMO_DELAY": "0", "DEMO_TOKEN": SECRET},
        "agents": {"demo": {"env": ["FLEET_DEMO_DELAY", "DEMO_TOKEN"]}},
        "kill_grace_seconds": 1.0,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
        "runtime": "container",
        "container": {"memory_mb": 256, "cpus": 1, "pids": 128, "network": "none"},
    }
    fields.update(kw)
    return fields


@pytest.fixture
async def engine(
    tmp_path: Path, db: Database, demo_image: str
) -> AsyncIterator[Callable[..., Any]]:
    try:
        async with conductors(db) as make:
            yield lambda config=FAST, **kw: make(settings_for(tmp_path, **kw), config)
    finally:
        # Every container of this test's host, also one an engine process left (no conductor
        # of this process may have been made when a test failed early).
        subprocess.run(["sh", "-c", f"docker ps -aq --filter label=fleet.host={HOST} | "
                        "xargs -r docker rm -f"], capture_output=True)  # fmt: skip


until = until_status


def inspect(name: str) -> dict[str, Any] | None:
    out = subprocess.run(["docker", "inspect", name], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    doc: dict[str, Any] = json.loads(out.stdout)[0]
    return doc


def containers_of(host: str) -> list[str]:
    out = subprocess.run(["docker", "ps", "-aq", "--filter", f"label=fleet.host={host}"],
                         capture_output=True, text=True, check=True)  # fmt: skip
    return out.stdout.split()


async def test_container_task_from_spawn_to_merged(engine, sample: Path) -> None:
    c, m = engine()
    rec = await spawn(c, sample, "Add a multiply function")  # the global setting: container
    assert rec.runtime == "container" and rec.sandbox == "container"
    doc = inspect(rec.tmux_session or "")
    assert doc is not None
    # The hardened create body, as the daemon kept it.
    cfg, hc = doc["Config"], doc["HostConfig"]
    assert cfg["User"] != "" and not cfg["User"].startswith("0:")
    assert hc["ReadonlyRootfs"] is True and hc["CapDrop"] == ["ALL"]
    assert hc["SecurityOpt"] == ["no-new-privileges"] and hc["Privileged"] is False
    assert "/tmp" in hc["Tmpfs"] and "noexec" in hc["Tmpfs"]["/tmp"]
    assert (hc["Memory"], hc["MemorySwap"]) == (256 << 20, 256 << 20)
    assert (hc["NanoCpus"], hc["PidsLimit"], hc["NetworkMode"]) == (10**9, 128, "none")
    assert cfg["Labels"]["fleet.task_id"] == str(rec.id)
    assert cfg["Labels"]["fleet.operator"] == "alice"
    assert cfg["Labels"]["fleet.host"] == c.runtime.host_id
    writable = sorted(m["Destination"] for m in doc["Mounts"] if m["RW"])
    assert writable == sorted([rec.worktree_path, "/home/agent", "/run/fleet"])
    data_dir = str(c.runtime.paths.data_dir)
    assert not any(m["Source"] in (data_dir, data_dir + "/") for m in doc["Mounts"])
    text = json.dumps(doc)
    assert SECRET not in text and "Add a multiply function" not in text  # nor the prompt
    pr = await until(c, m, rec.id, TaskStatus.PR_CREATED, TaskStatus.READY)
    assert pr.pr_number == 1
    ready = await until(c, m, rec.id, TaskStatus.READY)
    assert ready.ci_status is not None and ready.ci_status.value == "passing"
    log = await c.logs(ACTOR, str(rec.id))
    assert "[demo]" in log and "agent exited with status 0" in log
    merged = await c.merge(ACTOR, str(rec.id))
    assert merged.status is TaskStatus.MERGED
    remote = sample.parent / "sample.git"
    assert f"fleet-demo/{rec.id}.md" in git(remote, "ls-tree", "-r", "--name-only", "main")
    assert containers_of(c.runtime.host_id) == []  # the cleanup removed it


async def test_stop_leaves_no_container(engine, sample: Path) -> None:
    c, _ = engine()
    rec = await spawn(c, sample, "Wait forever [demo:hang]")
    assert await c.runtime.is_alive(rec.id)
    assert containers_of(c.runtime.host_id) != []
    stopped = await c.stop(ACTOR, str(rec.id))
    assert stopped.status is TaskStatus.CANCELLED
    assert containers_of(c.runtime.host_id) == []
    assert not await c.runtime.is_alive(rec.id)


async def test_a_container_agents_end_is_judged_before_the_next_cycle(engine, sample: Path) -> None:
    """The launcher in the container cannot reach the wake socket; the engine's follower of
    the container's output, whose stream ends when the container stops, sends the wake."""
    c, m = engine(config=MonitorConfig(interval_s=300.0, deadline_s=60.0))
    await m.start()
    try:
        await eventually(lambda: holds(m.cycles == 1))
        rec = await spawn(c, sample, "Break it [demo:fail]", max_retries=0)

        async def failed() -> bool:
            status = (await c.registry(ACTOR).get(rec.id)).status
            return status in (TaskStatus.FAILED, TaskStatus.ABANDONED)

        await eventually(failed, timeout=60)
        # The pass counts itself once it is done (after the move the test just saw).
        await eventually(lambda: holds(m.ends.passes >= 1), timeout=30)
        assert m.cycles == 1  # moved by a wake pass, not by a cycle
        ctx = (await c.registry(ACTOR).get(rec.id)).failure_context or {}
        assert ctx["exit_code"] == 1
    finally:
        await m.stop()


async def test_a_silent_container_agent_that_computes_is_not_idle(engine, sample: Path) -> None:
    """CPU time is progress in a container as in tmux: the container's first process is found
    in this host's /proc (and checked to be in the container's cgroup). A silent agent that
    computes runs on past its idle limit; one that only waits is stopped as idle."""
    spin = "import time\nwhile True: sum(range(10000))"
    c, m = engine(agents={"demo": {"command": ["python3", "-c", spin], "idle_minutes": 1}})
    busy = await spawn(c, sample, "Think hard", max_retries=0, timeout_minutes=60)
    pid = await c.runtime.agent_pid(busy.id)
    assert pid is not None and Path(f"/proc/{pid}/cgroup").read_text().count("docker") >= 1
    c2, m2 = engine(agents={"demo": {"command": ["sleep", "3600"], "idle_minutes": 1}})
    quiet = await spawn(c2, sample, "Wait quietly", max_retries=0, timeout_minutes=60)
    gone = await until(c2, m2, quiet.id, TaskStatus.ABANDONED, TaskStatus.FAILED)
    assert (gone.failure_context or {})["reason"] == "agent_idle"
    # The busy one: as many cycles as its idle limit (0.3 s here) several times over.
    loop = asyncio.get_running_loop()
    end = loop.time() + 3.0
    while loop.time() < end:
        report = await m.cycle()
        assert report is not None and report.errors == [], report
        await asyncio.sleep(0.1)
    now = await c.registry(ACTOR).get(busy.id)
    assert now.status is TaskStatus.RUNNING, now.failure_context
    await c.stop(ACTOR, str(busy.id))


async def test_a_daemon_that_does_not_answer_is_a_clear_spawn_error(
    tmp_path: Path, db: Database, sample: Path
) -> None:
    dead = tmp_path / "no-daemon.sock"
    c = Conductor.from_settings(
        settings_for(tmp_path, container={"docker_host": f"unix://{dead}"}), db
    )
    try:
        with pytest.raises(SpawnError, match=r"no Docker daemon reachable at unix://.*no-daemon"):
            await spawn(c, sample, "Add a multiply function")
        assert (await c.status(ACTOR)).tasks == []  # nothing was written
        overview = await fleet_overview(c, ACTOR)
        assert overview.containers is not None
        assert "container mode unavailable: no Docker daemon reachable" in overview.containers
    finally:
        await c.stop_engine()


async def test_an_agent_killed_for_memory_is_classified_oom(engine, sample: Path) -> None:
    # The demo type's command replaced by a program that needs more than the container has.
    c, m = engine(
        agents={"demo": {"command": ["python3", "-c", "b = bytearray(512 << 20)"]}},
        container={"memory_mb": 64, "network": "none"},
    )
    rec = await spawn(c, sample, "Allocate too much", max_retries=1)
    name = rec.tmux_session or ""
    status = await asyncio.wait_for(_ended(c, rec.id), 60)
    assert status.code == 137 and status.oom
    doc = inspect(name)
    assert doc is not None and doc["HostConfig"]["Memory"] == 64 << 20
    # Retried once with 0.75 of the prompt budget, killed for memory again, abandoned.
    done = await until(c, m, rec.id, TaskStatus.ABANDONED)
    ctx = done.failure_context or {}
    assert [a["reason"] for a in ctx["attempts"]] == ["oom", "oom"]
    assert ctx["prompt_budget"] == 6000 and done.retry_count == 1


async def _ended(c: Conductor, task_id: Any) -> Any:
    while (status := await c.runtime.exit_status(task_id)) is None:
        await asyncio.sleep(0.1)
    return status


async def test_a_missing_image_is_bad_input_before_anything_is_written(
    engine, sample: Path
) -> None:
    c, _ = engine(container={"images": {"demo": "fleet-agent-missing:0"}})
    with pytest.raises(
        BadInputError, match=r"image fleet-agent-missing:0 .* `fleet image build --agent demo`"
    ):
        await spawn(c, sample, "Add a multiply function")
    assert (await c.status(ACTOR)).tasks == [] and containers_of(c.runtime.host_id) == []


async def test_runtime_precedence_spawn_agent_type_repository_global(
    tmp_path: Path, db: Database, sample: Path
) -> None:
    """The spawn's choice, else the agent type's, the repository's, the global setting; a bad
    value in any of them names its field."""

    def mode(asked: str | None = None, **kw: Any) -> str:
        c = Conductor.from_settings(settings_for(tmp_path, **kw), db)
        return c.runtime_mode(asked, AgentType.DEMO, sample)

    repo_key = {str(sample): {"runtime": "container"}}
    assert mode(runtime="local") == "local"
    assert mode(runtime="local", repos=repo_key) == "container"
    typed = {"demo": {"runtime": "local", "env": ["FLEET_DEMO_DELAY"]}}
    assert mode(runtime="container", repos=repo_key, agents=typed) == "local"
    assert mode("container", runtime="local", agents=typed) == "container"
    with pytest.raises(ValueError, match=r"agents\.demo\.runtime: must be local or container"):
        mode(agents={"demo": {"runtime": "vm"}})
    with pytest.raises(ValueError, match="runtime"):
        SpawnRequest.model_validate({"description": "x", "repository": str(sample),
                                     "task_type": "feature", "runtime": "vm"})  # fmt: skip
    (sample / ".fleet.toml").write_text('runtime = "pod"\n')
    with pytest.raises(ConfigError, match="runtime"):
        mode()


async def test_reconcile_after_the_engine_is_killed(
    engine, sample: Path, pg: Pg, tmp_path: Path
) -> None:
    """An engine process spawns two container agents and is SIGKILLed; one container goes
    too. The next engine fails only that task, keeps the live one running (its kept log
    followed on from where it was left: more lines, none twice), and reports a container of
    this host that has no task without removing it."""
    fields = fields_for(tmp_path)
    doc = {"data_dir": fields.pop("data_dir").as_posix(), "dsn": pg.engine_dsn,
           "repo": str(sample), "settings": fields}  # fmt: skip
    proc = subprocess.Popen([sys.executable, str(HERE / "engine_worker.py"), json.dumps(doc)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:  # the worker ended before spawning: say why
        proc.wait(timeout=10)
        raise AssertionError(proc.stderr.read() if proc.stderr else "no output")
    dead, alive = json.loads(line)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    c, m = engine()
    subprocess.run(["docker", "rm", "-f", f"fleet-{dead}"], check=True, capture_output=True)
    stray = "7e57c0de-0000-4000-8000-000000000001"
    subprocess.run(["docker", "create", "--name", f"fleet-{stray}", "--label",
                    f"fleet.task_id={stray}", "--label", f"fleet.host={c.runtime.host_id}",
                    "fleet-agent-demo:latest", "true"], check=True, capture_output=True)  # fmt: skip
    report = await m.reconcile()
    assert [str(t) for t in report.orphaned] == [dead]
    assert [str(t) for t in report.untracked] == [stray]
    failed = await c.registry(ACTOR).get(dead)
    assert failed.status is TaskStatus.FAILED
    assert (failed.failure_context or {})["reason"] == "conductor_restart"
    cycle = await m.cycle()
    assert cycle is not None and cycle.errors == []
    live = await c.registry(ACTOR).get(alive)
    assert live.status is TaskStatus.RUNNING and await c.runtime.is_alive(live.id)
    assert inspect(f"fleet-{stray}") is not None  # reported, never removed
    # The kept log is followed on from where the killed engine left it: the launcher's last
    # line (after this engine stops the agent) is there, and nothing twice.
    stopped = await c.stop(ACTOR, alive)
    assert stopped.status is TaskStatus.CANCELLED
    text = c.runtime.log_path(UUID(alive)).read_text()
    assert text.count("fleet: starting") == 1 and text.count("fleet: agent exited") == 1
    assert inspect(f"fleet-{alive}") is None


def test_fleet_image_list_and_build(demo_image: str, tmp_path: Path) -> None:
    listed = fleet("image", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    tags = [i["tag"] for i in json.loads(listed.stdout)]
    assert demo_image in tags and "fleet-base:bookworm" in tags
    built = fleet("image", "build", "--agent", "demo")  # the base exists: only the layers
    assert built.returncode == 0, built.stderr
    assert "base fleet-base:bookworm: present" in built.stdout
    assert f"built {demo_image}" in built.stdout
    missing = fleet("image", "build", "--agent", "demo", "--base", "fleet-no-such-base:0")
    assert missing.returncode == 1 and "base image fleet-no-such-base:0 does not exist" in (
        missing.stderr
    )
    gone = fleet("image", "list", DOCKER_HOST=f"unix://{tmp_path}/none.sock")
    assert gone.returncode == 1 and "no Docker daemon reachable" in gone.stderr


def test_a_ca_bundle_goes_into_the_build_context_and_bad_ones_are_refused(tmp_path: Path) -> None:
    import tarfile

    pem = b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
    with tarfile.open(fileobj=docker_images.build_context(AgentType.CLAUDE_CODE, pem)) as tar:
        assert tar.getnames() == ["Dockerfile", "ca", "ca/fleet-extra.crt"]
        extracted = tar.extractfile("ca/fleet-extra.crt")
        assert extracted is not None and extracted.read() == pem
    with tarfile.open(fileobj=docker_images.build_context(AgentType.CLAUDE_CODE)) as tar:
        assert tar.getnames() == ["Dockerfile", "ca"]  # COPY ca needs the directory
    for agent in (a for a in AgentType if a not in (AgentType.DEMO, AgentType.CUSTOM)):
        text = docker_images.dockerfile(agent).read_text()
        assert "COPY ca /usr/lib/fleet-ca" in text and "update-ca-certificates" in text
        assert text.index("update-ca-certificates") < text.index("apt-get update")
    (tmp_path / "not.pem").write_text("hello")
    for path, said in ((tmp_path / "not.pem", "holds no PEM certificate"),
                       (tmp_path / "missing.pem", "cannot read")):  # fmt: skip
        out = fleet("image", "build", "--agent", "demo", "--ca-bundle", str(path))
        assert out.returncode == 2 and "fleet image build: --ca-bundle: " in out.stderr
        assert said in out.stderr and str(path) in out.stderr


def test_cli_verbs_close_their_docker_client(demo_image: str, sample: Path) -> None:
    """`fleet spawn` and `fleet stop` of a container task close the daemon's client (aiohttp
    logged "Unclosed connector" to the log file at every verb's exit before)."""
    log = Path(os.environ["FLEET_DATA_DIR"]) / "logs" / "fleet.log"
    before = log.read_text().count("Unclosed") if log.exists() else 0
    out = fleet("spawn", "--repo", str(sample), "--type", "docs", "--agent", "demo",
                "--runtime", "container", "--json", "Wait here [demo:hang]",
                FLEET_SECRETS='{"FLEET_DEMO_DELAY": "0"}')  # fmt: skip
    assert out.returncode == 0, out.stderr
    task = json.loads(out.stdout)
    try:
        assert task["runtime"] == "container" and inspect(task["tmux_session"]) is not None
    finally:
        stopped = fleet("stop", task["id"], "--json")
    assert stopped.returncode == 0 and json.loads(stopped.stdout)["status"] == "cancelled"
    assert inspect(task["tmux_session"]) is None
    assert log.read_text().count("Unclosed") == before
