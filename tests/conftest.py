"""Shared fixtures: one embedded PostgreSQL cluster for the session, started by the same
manager the program uses, with a clean schema for every test."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import uvicorn

# Tests never read the user's config or touch their data dir (FLEET_TEST_* are the suite's own
# settings, such as FLEET_TEST_EXTERNAL_URL).
for _name in [n for n in os.environ if n.startswith("FLEET_") and not n.startswith("FLEET_TEST_")]:
    del os.environ[_name]
_SANDBOX = Path(tempfile.mkdtemp(prefix="fleet-tests-"))
os.environ["FLEET_CONFIG"] = str(_SANDBOX / "absent.toml")
os.environ["FLEET_DATA_DIR"] = str(_SANDBOX / "data")
# A verb that spawns would start the background engine (a process that outlives the test):
# only the tests of that engine turn it on (tests/test_background_engine.py).
os.environ["FLEET_ENGINE_AUTOSTART"] = "false"
# The fake `gh` (tests/fake_gh) parses GraphQL with graphql-core, a test dependency: whatever
# python3 is first on PATH, it runs itself with this interpreter when that one lacks it.
os.environ["FAKE_GH_PYTHON"] = sys.executable

from fleet_core.api.app import create_app  # noqa: E402
from fleet_core.auth.keys import KeyStore  # noqa: E402
from fleet_core.config import Settings, load_settings  # noqa: E402
from fleet_core.db.connect import cluster_for, migrate, resolve_target  # noqa: E402
from fleet_core.db.database import Database, Tenant  # noqa: E402
from fleet_core.db.embedded import EmbeddedCluster  # noqa: E402
from fleet_core.demo import make_sample  # noqa: E402
from fleet_core.engine import Engine, running_engine  # noqa: E402
from fleet_core.headless import Server  # noqa: E402
from fleet_core.models import AgentType, NewTask, TaskType  # noqa: E402
from fleet_core.registry import TaskRegistry  # noqa: E402
from fleet_core.repositories import Repositories, Repository  # noqa: E402
from fleet_core.runtime.paths import RuntimePaths  # noqa: E402

TABLES = (
    "fleet_notify_channels",
    "fleet_switches",
    "fleet_master_key",
    "fleet_secrets",
    "fleet_tokens",
    "fleet_repository_grants",
    "fleet_repositories",
    "fleet_signing_keys",
    "fleet_spawn_queue",
    "fleet_audit",
    "fleet_outbox",
    "fleet_notifications",
    "fleet_config",
    "fleet_tasks",
)


@dataclass(frozen=True)
class Pg:
    settings: Settings
    cluster: EmbeddedCluster
    owner_dsn: str
    engine_dsn: str
    superuser_dsn: str
    sandbox: Path

    def su_dsn(self, database: str) -> str:
        return self.cluster.info.dsn("postgres", database)


@pytest.fixture(scope="session")
def pg() -> Iterator[Pg]:
    settings = load_settings()
    cluster = cluster_for(settings)
    target = asyncio.run(resolve_target(settings))
    asyncio.run(migrate(target.owner_dsn))
    try:
        yield Pg(
            settings,
            cluster,
            target.owner_dsn,
            target.engine_dsn,
            cluster.info.dsn("postgres", "fleet"),
            _SANDBOX,
        )
    finally:
        _stop_background_engines(settings.data_dir)
        cluster.destroy()


def _stop_background_engines(data_dir: Path) -> None:
    """The safety net behind every test's own cleanup: a background engine (a detached
    `fleet engine run`) still holding a lock of the session's data dir is killed."""
    import signal

    from fleet_core.engine_lock import current_holder

    for lock in (data_dir / "engine").glob("*.lock"):
        holder = current_holder(lock)
        if holder is not None and holder.role == "background" and holder.pid > 0:
            with suppress(ProcessLookupError):
                os.kill(holder.pid, signal.SIGKILL)


@pytest.fixture
async def su(pg: Pg) -> AsyncIterator[asyncpg.Connection]:
    """Superuser connection to the test database (bypasses RLS); tables emptied first."""
    conn = await asyncpg.connect(pg.superuser_dsn)
    await conn.execute(f"TRUNCATE {', '.join(TABLES)} RESTART IDENTITY CASCADE")
    try:
        yield conn
    finally:
        await conn.close()


@pytest.fixture
async def db(pg: Pg, su: asyncpg.Connection) -> AsyncIterator[Database]:
    database = await Database.connect(pg.engine_dsn, owner_dsn=pg.owner_dsn, mode="embedded")
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def alice(db: Database) -> TaskRegistry:
    return TaskRegistry(db, Tenant.operator("alice"))


@pytest.fixture
def bob(db: Database) -> TaskRegistry:
    return TaskRegistry(db, Tenant.operator("bob"))


@pytest.fixture
def admin(db: Database) -> TaskRegistry:
    return TaskRegistry(db, Tenant.admin())


def new_task(**overrides: object) -> NewTask:
    fields: dict[str, object] = {
        "agent_type": AgentType.DEMO,
        "model": "demo-1",
        "task_type": TaskType.BUG_FIX,
        "description": "fix the flaky test",
        "branch": "fleet/test-branch",
        "repository": "/srv/repo",
        "base_branch": "main",
    }
    fields.update(overrides)
    return NewTask.model_validate(fields)


# -- git repositories -------------------------------------------------------------------------

ID = ["-c", "user.name=test", "-c", "user.email=test@example.invalid"]


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(cwd), *ID, *args], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    origin = tmp_path / "origin.git"
    work = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README.md").write_text("sample\n")
    git(work, "add", "README.md")
    git(work, "commit", "-q", "-m", "initial")
    git(work, "remote", "add", "origin", str(origin))
    git(work, "push", "-q", "-u", "origin", "main")
    return work


def origin_of(repo: Path) -> Path:
    return repo.parent / "origin.git"


# -- the demo agent's output ------------------------------------------------------------------


def demo_log(task: dict[str, Any], *steps: str, exit_status: int | None = None) -> list[str]:
    """What the pane of a demo-agent `task` (a task document: spawn's answer) shows, in the form
    `normalised` gives: the launcher's line, the agent's known lines ending in `steps`, and the
    launcher's exit line when the agent ended. The prompt's hash is the task's `prompt_hash`.
    A hanging agent (`[demo:hang]`) says so at once and writes nothing."""
    tid = task["id"]
    lines = [
        f"fleet: starting AGENT for task {tid}",
        f"[demo] read prompt: N bytes, sha256 {task['prompt_hash']}",
    ]
    if "[demo:hang]" not in task.get("description", ""):
        lines += [f"[demo] wrote fleet-demo/{tid}.md", "[demo] committed"]
    lines += [f"[demo] {step}" for step in steps]
    if exit_status is not None:
        lines.append(f"fleet: agent exited with status {exit_status}")
    return lines


def normalised(lines: list[str]) -> list[str]:
    """Pane lines without blank ones, the agent's path, the sandbox mark and the prompt's length
    (the prompt is built by the engine; its hash is checked instead)."""
    out = []
    for line in lines:
        if not line.strip():
            continue
        line = re.sub(r"^fleet: starting \S+ for task", "fleet: starting AGENT for task", line)
        line = line.rstrip().removesuffix(" (sandboxed)")
        out.append(re.sub(r"read prompt: \d+ bytes", "read prompt: N bytes", line.rstrip()))
    return out


async def grant_repo(
    db: Database, repo: Path, *operators: str, name: str | None = None
) -> Repository:
    """Register `repo` as an admin does (`fleet repo add PATH --grant OP ...`): a spawn
    names a repository granted to its operator."""
    return await Repositories(db).add(str(repo), by="admin", name=name, grants=operators)


@pytest.fixture
async def sample(tmp_path: Path, db: Database) -> Path:
    """The demo's sample repository (a small unittest suite, a bare remote), granted to alice."""
    work = make_sample(tmp_path / "demo")
    await grant_repo(db, work, "alice")
    return work


# -- the command line -------------------------------------------------------------------------


def fleet(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`fleet ARGS` as a user runs it, as operator alice, against the session's cluster."""
    return subprocess.run(
        [sys.executable, "-m", "fleet_core", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FLEET_OPERATOR": "alice", **env},
    )


# -- the HTTP API on 127.0.0.1 ------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def api_settings(pg: Pg, tmp_path: Path, host_id: str) -> Settings:
    return Settings(
        data_dir=pg.settings.data_dir,
        worktree_dir=tmp_path / "worktrees",
        host_id=host_id,
        secrets={"FLEET_DEMO_DELAY": "0"},
        kill_grace_seconds=0.5,
        # One master key for every host of the database (its fingerprint is checked at start).
        key_encryption_key=base64.b64encode(b"fleet-tests-master-key".ljust(32, b"k")).decode(),
        gh="/nonexistent/gh",
    )


@asynccontextmanager
async def api_server(
    settings: Settings, clock: Callable[[], float] = time.monotonic
) -> AsyncIterator[tuple[str, Engine, KeyStore]]:
    """A real uvicorn on a free port over the real engine (no monitor); yields its base URL,
    the engine and the key store; stops both and the agents' tmux server afterwards. `clock`
    times the app's caches (token records, metrics)."""
    async with running_engine(settings, background=False) as engine:
        keys = KeyStore(engine.db, KeyStore.load_master_key(settings))
        await keys.ensure_signing_key()
        port = free_port()
        app = create_app(engine, keys, clock=clock)
        config = uvicorn.Config(app, host="127.0.0.1", port=port,
                                log_config=None, access_log=False, lifespan="off")  # fmt: skip
        server = Server(config)
        serving = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}", engine, keys
        finally:
            server.should_exit = True
            await serving
    sock = RuntimePaths.from_settings(settings).tmux_socket
    subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


# -- waiting for asynchronous effects ----------------------------------------------------------


async def holds(value: bool) -> bool:
    """`value` as an awaitable, for `eventually(lambda: holds(...))` on plain conditions."""
    return value


async def eventually(predicate: Callable[[], Awaitable[object]], timeout: float = 20.0) -> None:
    """Poll an async `predicate` until it is truthy; fail after `timeout` seconds."""
    for _ in range(int(timeout / 0.05)):
        if await predicate():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


async def pilot_until(
    pilot: Any, check: Callable[[], bool], what: str = "the condition", *, timeout: float = 20.0
) -> None:
    """Let a Textual app run until `check()` holds (messages take several hops; one pause can
    be outrun on a loaded machine); fail after `timeout` seconds, naming `what`."""
    for _ in range(int(timeout / 0.02)):
        if check():
            return
        await pilot.pause(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def fits(table: Any) -> bool:
    """Every cell of a Textual DataTable is shown whole by its column's width."""
    from rich.cells import cell_len

    for column in table.ordered_columns:
        shown = column.get_render_width(table) - 2 * table.cell_padding
        if any(cell_len(str(cell)) > shown for cell in table.get_column(column.key)):
            return False
    return True
