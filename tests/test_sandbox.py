"""Escape attempts from inside the sandbox, each run by a real process: an agent (through the
real launcher in real tmux), a repository's `setup` command and the local forge's `ci`
command. Every attempt must fail, and its output is kept in the report the probe writes.

Needs bubblewrap (and slirp4netns, setpriv when root): `.ci/run` installs them; under
CI=true a missing sandbox fails these tests instead of skipping them."""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from conftest import Pg, git, origin_of
from fleet_core.db.database import Database
from fleet_core.forge.local import LocalForge
from fleet_core.models import AgentType, CiStatus
from fleet_core.runtime.adapters import build_adapters
from fleet_core.runtime.handles import SpawnSpec
from fleet_core.runtime.local import LocalRuntime
from fleet_core.runtime.paths import RuntimePaths
from fleet_core.runtime.policy import fleet_paths
from fleet_core.runtime.sandbox import (
    NetworkMode,
    Sandbox,
    SandboxMode,
    SandboxPolicy,
    resolve,
)
from fleet_core.runtime.secrets import SecretProvider

if shutil.which("bwrap") is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("bubblewrap is missing under CI=true: .ci/run installs it")
    pytest.skip("bubblewrap (bwrap) is not installed", allow_module_level=True)

# The probe: every attempt prints "blocked: ..." or "ESCAPED: ..."; the report goes to
# probe-<name>.json in its working directory (its checkout) and to stdout.
PROBE = r"""
import fcntl, json, os, socket, sys, termios
t = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
r = {}
def attempt(name, fn):
    try:
        out = fn()
        r[name] = "ESCAPED: " + repr(out)[:200]
    except Exception as e:
        r[name] = "blocked: " + type(e).__name__ + ": " + str(e)[:200]
def read(p):
    with open(p) as fh:
        return fh.read()
def write(p):
    with open(p, "w") as fh:
        fh.write("escaped")
    return p
def listing(p):
    names = sorted(set(os.listdir(p)) - set(t["allowed_names"]))
    if names:
        return names
    raise PermissionError("nothing of fleet's visible")
def unix(p):
    s = socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect(p); return "connected"
def tcp(host, port):
    s = socket.create_connection((host, port), timeout=3)
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = s.recv(200)
    if not data:
        raise ConnectionError("connected, but nothing answered")
    return data
def fleet_env():
    found = {k: v for k, v in os.environ.items()
             if k.startswith("FLEET_") and k not in ("FLEET_TASK_ID", "FLEET_AGENT_TYPE",
                                                     "FLEET_ATTEMPT", "FLEET_DEMO_DELAY")}
    found.update({k: "set" for k in t["engine_vars"] if k in os.environ})
    if found:
        return found
    raise KeyError("no engine variables")
def root():
    if os.getuid() == 0 or os.geteuid() == 0:
        return "uid 0"
    return read("/etc/shadow")
def engine():
    os.kill(t["engine_pid"], 0)
    return "engine pid visible"
def pids():
    others = [p for p in os.listdir("/proc") if p.isdigit() and int(p) > 50]
    if any(int(p) == t["engine_pid"] for p in others) or len(others) > 20:
        return others
    raise ProcessLookupError("only the sandbox's own processes")
def tiocsti():
    fd = os.open("/dev/tty", os.O_RDWR)
    fcntl.ioctl(fd, termios.TIOCSTI, b"x")
    return "typed into the terminal"
attempt("read_master_key", lambda: read(t["master_key"]))
attempt("list_data_dir", lambda: listing(t["data_dir"]))
attempt("cluster_socket", lambda: unix(t["cluster_socket"]))
attempt("host_loopback", lambda: tcp("127.0.0.1", t["loopback_port"]))
attempt("slirp_host", lambda: tcp("10.0.2.2", t["loopback_port"]))
attempt("read_other_checkout", lambda: os.listdir(t["other_checkout"]))
attempt("write_other_checkout", lambda: write(os.path.join(t["other_checkout"], "x")))
attempt("write_repository", lambda: write(os.path.join(t["repository"], "x")))
attempt("write_host_tmp", lambda: write(t["host_tmp_file"]))
attempt("write_etc", lambda: write("/etc/fleet-escaped"))
attempt("signal_engine", engine)
attempt("see_processes", pids)
attempt("fleet_variables", fleet_env)
attempt("root", root)
if t.get("tty"):
    attempt("tiocsti", tiocsti)
r["whoami"] = os.getuid()
with open(os.path.join(os.getcwd(), "probe-" + t["name"] + ".json"), "w") as fh:
    json.dump(r, fh)
print(json.dumps(r), flush=True)
"""


class Loopback:
    """An HTTP server on the host's 127.0.0.1 that a sandboxed process must not reach."""

    def __init__(self) -> None:
        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler
        )
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    server = Loopback()
    try:
        yield server
    finally:
        server.close()


def the_sandbox(data_dir: Path, pg: Pg, network: NetworkMode = NetworkMode.SLIRP) -> Sandbox:
    hidden = [data_dir, pg.cluster.root, pg.cluster.socket_dir, *fleet_paths(pg.settings)]
    sandbox, why = resolve(SandboxPolicy(SandboxMode.REQUIRED, network), hidden)
    assert sandbox is not None, why
    return sandbox


def targets(name: str, data_dir: Path, pg: Pg, repo: Path, port: int, other: Path) -> str:
    keys = data_dir / "keys"
    keys.mkdir(parents=True, exist_ok=True, mode=0o700)
    (keys / "master.key").write_text("MASTER-KEY-SENTINEL")
    return json.dumps({
        "name": name,
        "master_key": str(keys / "master.key"),
        "data_dir": str(data_dir),
        # parents of its own binds (empty but for the path to them)
        "allowed_names": ["worktrees", "homes", "forge"],
        "cluster_socket": str(pg.cluster.socket_dir / ".s.PGSQL.5432"),
        "loopback_port": port,
        "other_checkout": str(other),
        "repository": str(repo),
        "host_tmp_file": f"/tmp/fleet-escape-{uuid.uuid4().hex}",
        "engine_pid": os.getpid(),
        "engine_vars": ["FLEET_KEY_ENCRYPTION_KEY", "FLEET_DATABASE_URL", "GH_TOKEN"],
        "tty": name == "agent",
    })  # fmt: skip


def assert_all_blocked(report: dict[str, object]) -> None:
    escaped = {k: v for k, v in report.items() if str(v).startswith("ESCAPED")}
    assert escaped == {}, json.dumps(report, indent=2)
    assert report["whoami"] != 0


@pytest.fixture
async def sandboxed(tmp_path: Path, db: Database, pg: Pg) -> AsyncIterator[LocalRuntime]:
    data_dir = tmp_path / "data"
    os.environ["FLEET_KEY_ENCRYPTION_KEY"] = "ENGINE-SECRET-SENTINEL"  # the engine's own
    os.environ["GH_TOKEN"] = "ghp_engine_sentinel"
    runtime = LocalRuntime(
        RuntimePaths.under(data_dir),
        build_adapters({"custom": {"command": [sys.executable, "-I", "-S", "-c", PROBE]}}),
        SecretProvider(db, environ={}),
        host_id="test-host",
        kill_grace_s=1.0,
        sandbox=the_sandbox(data_dir, pg),
    )
    try:
        yield runtime
    finally:
        os.environ.pop("FLEET_KEY_ENCRYPTION_KEY", None)
        os.environ.pop("GH_TOKEN", None)
        await runtime.tmux.kill_server()


def spec(repo: Path, agent: AgentType = AgentType.DEMO, prompt: str = "probe", **kw) -> SpawnSpec:
    tid = uuid.uuid4()
    return SpawnSpec(
        task_id=tid, operator_id="alice", repository=repo, branch=f"fleet/t-{str(tid)[:8]}",
        agent_type=agent, model="m", prompt=prompt, **kw,
    )  # fmt: skip


async def wait_file(path: Path, rt: LocalRuntime, task_id: uuid.UUID) -> dict[str, object]:
    for _ in range(600):
        if path.exists():
            return json.loads(path.read_text())
        await asyncio.sleep(0.05)
    raise AssertionError(f"no report at {path}; log:\n{await rt.logs(task_id)}")


async def test_an_agent_escapes_nothing(
    sandboxed: LocalRuntime, repo: Path, pg: Pg, loopback: Loopback
) -> None:
    rt = sandboxed
    other = spec(repo)  # another task's checkout, with its own agent (the demo agent)
    await rt.spawn(other)
    other_checkout = rt.paths.worktrees / str(other.task_id)
    agent_targets = targets("agent", rt.paths.data_dir, pg, repo, loopback.port, other_checkout)
    probe = spec(repo, AgentType.CUSTOM, prompt=agent_targets)  # the targets are its prompt
    handle = await rt.spawn(probe)
    report = await wait_file(handle.worktree_path / "probe-agent.json", rt, probe.task_id)
    assert_all_blocked(report)
    assert set(report) >= {"tiocsti", "slirp_host", "cluster_socket", "read_master_key"}
    assert "blocked" in await rt.logs(probe.task_id)  # the attempts' output is captured
    assert not (repo / "x").exists() and not (other_checkout / "x").exists()
    st = handle.worktree_path.stat()
    if os.geteuid() == 0:  # the checkout belongs to the agent user, never root
        assert st.st_uid == rt.sandbox.run_as.uid != 0  # type: ignore[union-attr]


async def test_setup_and_ci_commands_escape_nothing(
    sandboxed: LocalRuntime, repo: Path, pg: Pg, loopback: Loopback, tmp_path: Path
) -> None:
    rt = sandboxed
    other = spec(repo)
    await rt.spawn(other)
    other_checkout = rt.paths.worktrees / str(other.task_id)
    setup_targets = targets("setup", rt.paths.data_dir, pg, repo, loopback.port, other_checkout)
    s = spec(repo, setup=[sys.executable, "-I", "-S", "-c", PROBE, setup_targets])
    handle = await rt.spawn(s)
    assert_all_blocked(json.loads((handle.worktree_path / "probe-setup.json").read_text()))

    ci_targets = targets("ci", rt.paths.data_dir, pg, repo, loopback.port, other_checkout)
    ci = [sys.executable, "-I", "-S", "-c", PROBE + "\nprint(open('probe-ci.json').read())",
          ci_targets]  # fmt: skip
    forge = LocalForge(
        rt.paths.data_dir / "forge", ci_command=lambda _r: ci, confinement=rt.confinement
    )
    try:
        git(repo, "checkout", "-q", "-b", "ci-probe")
        (repo / "change.txt").write_text("x\n")
        git(repo, "add", "change.txt")
        git(repo, "commit", "-q", "-m", "change")
        git(repo, "push", "-q", "origin", "ci-probe")
        pr = (await forge.find_prs(repo, ["ci-probe"]))["ci-probe"]
        await forge.ci_status(repo, [pr.number])
        await forge.wait_idle()
        report = (await forge.ci_status(repo, [pr.number]))[pr.number]
        assert report.state is CiStatus.PASSING, report
        assert report.url is not None
        log = Path(report.url).read_text()
        assert_all_blocked(json.loads(log.strip().splitlines()[-1]))
    finally:
        await forge.close()
    assert git(origin_of(repo), "branch", "--list", "fleet/*") == ""


async def test_network_none_and_host_loopback(tmp_path: Path, pg: Pg, loopback: Loopback) -> None:
    """`none` reaches nothing at all; the default (slirp) reaches out but not the host's
    loopback (shown above); the probe of outbound access needs an internet this machine
    does not reliably have, so only the namespace's interfaces are checked here."""
    sandbox = the_sandbox(tmp_path / "data", pg, NetworkMode.NONE)
    from fleet_core.runtime.contained import Confinement

    box = Confinement(sandbox, tmp_path / "data")
    work = tmp_path / "work"
    work.mkdir()
    code = ("import socket\ntry:\n socket.create_connection(('127.0.0.1', PORT), timeout=2)\n"
            " print('ESCAPED')\nexcept OSError as e:\n print('blocked', e)\n"
            "print(open('/proc/net/dev').read())").replace("PORT", str(loopback.port))  # fmt: skip
    result = await box.run([sys.executable, "-I", "-S", "-c", code], cwd=work, writable=[work],
                           timeout=30)  # fmt: skip
    assert result.stdout.startswith("blocked")
    interfaces = {ln.split(":")[0].strip() for ln in result.stdout.splitlines() if ":" in ln}
    assert "tap0" not in interfaces and "lo" in interfaces


def test_the_seccomp_filter_is_a_valid_program() -> None:
    from fleet_core.runtime.sandbox import tiocsti_filter

    program = tiocsti_filter()
    assert len(program) % 8 == 0 and len(program) // 8 < 64


def test_required_without_bubblewrap_refuses(monkeypatch: pytest.MonkeyPatch) -> None:
    """PATH without bwrap: `required` is an error, `auto` says why it runs unsandboxed."""
    from fleet_core.runtime.sandbox import SandboxUnavailableError

    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(SandboxUnavailableError, match="bubblewrap"):
        resolve(SandboxPolicy(SandboxMode.REQUIRED), [])
    sandbox, why = resolve(SandboxPolicy(SandboxMode.AUTO), [])
    assert sandbox is None and why is not None and "bubblewrap" in why


def test_host_loopback_is_really_listening(loopback: Loopback) -> None:
    """The target the sandbox must not reach answers from outside it."""
    with socket.create_connection(("127.0.0.1", loopback.port), timeout=3) as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        assert s.recv(20).startswith(b"HTTP/")


HOG = "b = bytearray(400 * 1024 * 1024)\nprint('allocated', flush=True)"
FORKS = (
    "import os, time\nn = 0\nfor _ in range(100):\n    try:\n        pid = os.fork()\n"
    "    except OSError as e:\n        print('fork refused:', e, flush=True)\n        break\n"
    "    if pid == 0:\n        time.sleep(3)\n        os._exit(0)\n    n += 1\n"
    "print('forked', n, flush=True)\n"
)


@pytest.mark.skipif(os.geteuid() != 0, reason="cgroups are made by the engine as root")
async def test_memory_and_process_limits_bind_one_agent(
    tmp_path: Path, db: Database, pg: Pg, repo: Path
) -> None:
    from fleet_core.runtime.limits import AgentLimits

    data_dir = tmp_path / "data"
    rt = LocalRuntime(
        RuntimePaths.under(data_dir),
        build_adapters({"custom": {"command": [sys.executable, "-I", "-S", "-c", "{model}"]}}),
        SecretProvider(db, environ={}),
        host_id="test-host",
        sandbox=the_sandbox(data_dir, pg, NetworkMode.NONE),
        agent_limits=AgentLimits(memory_mb=100, pids=30),
    )
    try:
        hog = SpawnSpec(**{**spec(repo, AgentType.CUSTOM).__dict__, "model": HOG})
        forks = SpawnSpec(**{**spec(repo, AgentType.CUSTOM).__dict__, "model": FORKS})
        await rt.spawn(hog)
        await rt.spawn(forks)
        for _ in range(400):
            done = [await rt.exit_status(s.task_id) for s in (hog, forks)]
            if all(done):
                break
            await asyncio.sleep(0.05)
        hog_exit, forks_exit = done
        assert hog_exit is not None and hog_exit.code == 137 and hog_exit.oom
        assert "allocated" not in await rt.logs(hog.task_id)
        log = await rt.logs(forks.task_id)
        assert forks_exit is not None and "fork refused" in log, log
        forked = int(log.split("forked ", 1)[1].split()[0])
        assert forked < 30
    finally:
        await rt.tmux.kill_server()


async def test_a_sandboxed_task_never_continues_unsandboxed(
    tmp_path: Path, db: Database, repo: Path
) -> None:
    from fleet_core.errors import SpawnError

    rt = LocalRuntime(
        RuntimePaths.under(tmp_path / "data"),
        build_adapters(),
        SecretProvider(db, environ={}),
        host_id="test-host",
        sandbox=None,
        unsandboxed_reason="bubblewrap is not installed",
    )
    try:
        s = SpawnSpec(**{**spec(repo).__dict__, "sandbox": "bwrap"})
        with pytest.raises(SpawnError, match="never continues without it") as err:
            await rt.respawn(s)
        assert err.value.step == "sandbox"
        assert not (rt.paths.worktrees / str(s.task_id)).exists()
    finally:
        await rt.tmux.kill_server()


async def test_a_tool_installed_around_a_hidden_dir_does_not_uncover_it(
    tmp_path: Path, pg: Pg
) -> None:
    """Root's data dir lies inside /root/.local, where a CLI may be installed too: binding the
    tool's installation must not bring the data dir back into view."""
    from fleet_core.runtime.contained import Confinement

    prefix = tmp_path / "local"  # stands for /root/.local (under /tmp: hidden by default)
    (prefix / "bin").mkdir(parents=True)
    tool = prefix / "bin" / "peek"
    tool.write_text('#!/bin/sh\nls "$1" 2>&1; cat "$1/keys/master.key" 2>&1; echo ran\n')
    tool.chmod(0o755)
    data = prefix / "share" / "fleet"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "master.key").write_text("MASTER-KEY-SENTINEL")
    sandbox = the_sandbox(data, pg, NetworkMode.NONE)
    work = tmp_path / "work"
    work.mkdir()
    box = Confinement(sandbox, tmp_path / "run-data")
    result = await box.run([str(tool), str(data)], cwd=work, writable=[work], timeout=30)
    assert result.stdout.strip().endswith("ran")  # the tool was reachable and ran
    lines = result.stdout.splitlines()
    assert "MASTER-KEY-SENTINEL" not in result.stdout
    assert lines[0].endswith("master.key: No such file or directory")  # `ls` printed nothing


async def test_a_filter_planted_in_a_checkout_never_runs_with_fleets_rights(
    sandboxed: LocalRuntime, repo: Path, tmp_path: Path
) -> None:
    """A clean filter named in `.gitattributes` and the checkout's config runs whenever git
    reads the working tree (status, add, diff): the snapshot taken at cleanup runs those as
    the agent in its sandbox, so the filter cannot reach the host's /tmp (nor anything else
    of fleet's). The patch is still kept, byte for byte."""
    rt = sandboxed
    s = spec(repo, prompt="plant a filter [demo:fail]")
    handle = await rt.spawn(s)
    for _ in range(400):
        if await rt.exit_status(s.task_id) is not None:
            break
        await asyncio.sleep(0.05)
    co = handle.worktree_path
    canary = tmp_path / "filter-ran"
    evil = f"sh -c 'id -u >> {canary}; cat'"
    subprocess.run(["git", "-c", "safe.directory=*", "-C", str(co), "config", "filter.evil.clean", evil],
                   check=True)  # fmt: skip
    (co / ".gitattributes").write_text("* filter=evil\n")
    (co / "notes.txt").write_bytes(b"caf\xe9\n")
    result = await rt.cleanup(s.task_id, repo, s.branch)
    assert result.patch is not None and b"notes.txt" in result.patch.read_bytes()
    assert not canary.exists(), f"the filter ran outside the sandbox as uid {canary.read_text()}"
