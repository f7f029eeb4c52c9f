"""Shared fixtures: one embedded PostgreSQL cluster for the session, started by the same
manager the program uses, with a clean schema for every test."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest

# Tests never read the user's config or touch their data dir.
for _name in [n for n in os.environ if n.startswith("FLEET_")]:
    del os.environ[_name]
_SANDBOX = Path(tempfile.mkdtemp(prefix="fleet-tests-"))
os.environ["FLEET_CONFIG"] = str(_SANDBOX / "absent.toml")
os.environ["FLEET_DATA_DIR"] = str(_SANDBOX / "data")

from fleet_core.config import Settings, load_settings  # noqa: E402
from fleet_core.db.connect import cluster_for, migrate, resolve_target  # noqa: E402
from fleet_core.db.database import Database, Tenant  # noqa: E402
from fleet_core.db.embedded import EmbeddedCluster  # noqa: E402
from fleet_core.models import AgentType, NewTask, TaskType  # noqa: E402
from fleet_core.registry import TaskRegistry  # noqa: E402

TABLES = (
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
        cluster.destroy()


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
