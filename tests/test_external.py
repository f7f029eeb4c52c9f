"""FLEET_DATABASE_URL mode against the PostgreSQL server on 127.0.0.1:5432: skipped when there
is none, except under CI=true, where a missing server fails the run."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from conftest import free_port, new_task
from fleet_core.config import Settings
from fleet_core.db.connect import cluster_for, open_database
from fleet_core.db.database import Tenant
from fleet_core.registry import TaskRegistry

ADMIN_URL = os.environ.get(
    "FLEET_TEST_EXTERNAL_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


@pytest.fixture
async def external_url() -> AsyncIterator[str]:
    try:
        admin = await asyncpg.connect(ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        missing = f"no external PostgreSQL at {ADMIN_URL}: {exc}"
        if ci():  # CI machines have one: its absence is a broken run, not a skip
            pytest.fail(f"{missing} (CI=true: a CI machine must provide it)")
        pytest.skip(missing)
    name = f"fleet_ext_{uuid.uuid4().hex[:8]}"
    await admin.execute(f"CREATE DATABASE {name}")
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


async def test_external_database_binds_rls(external_url: str, tmp_path: Path) -> None:
    settings = Settings(database_url=external_url, data_dir=tmp_path)
    db = await open_database(settings)
    try:
        assert db.mode == "external"
        async with db.pool.acquire() as conn:
            assert await conn.fetchval("SELECT current_user") == "fleet_engine"
        alice = TaskRegistry(db, Tenant.operator("alice"))
        rec = await alice.create(new_task())
        assert await TaskRegistry(db, Tenant.operator("bob")).find(rec.id) is None
        assert (await alice.get(rec.id)).id == rec.id
    finally:
        await db.close()
    assert cluster_for(settings).status() == "absent"  # no embedded cluster was started
    result = subprocess.run(
        [sys.executable, "-m", "fleet_core", "status", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLEET_DATABASE_URL": external_url, "FLEET_OPERATOR": "alice"},
    )
    assert result.returncode == 0, result.stderr
    assert '"active": 1' in result.stdout
    stop = subprocess.run(
        [sys.executable, "-m", "fleet_core", "db", "stop"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "FLEET_DATABASE_URL": external_url},
    )  # fmt: skip
    assert stop.returncode == 2 and "FLEET_DATABASE_URL" in stop.stderr


async def test_unreachable_external_database_is_one_clear_error(tmp_path: Path) -> None:
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/x", data_dir=tmp_path)
    from fleet_core.errors import DatabaseError

    with pytest.raises(DatabaseError, match="cannot reach FLEET_DATABASE_URL"):
        await open_database(settings)


def test_a_missing_server_fails_under_ci(tmp_path: Path) -> None:
    """Run this file's tests against a port nobody answers: skipped by hand, failed under CI."""
    port = free_port()
    env = {**os.environ, "FLEET_TEST_EXTERNAL_URL": f"postgresql://postgres@127.0.0.1:{port}/x"}
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
            "-k", "binds_rls", "--rootdir", str(Path(__file__).parent.parent)]  # fmt: skip
    by_hand = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                             env={**env, "CI": ""}, cwd=tmp_path)  # fmt: skip
    assert by_hand.returncode == 0 and "1 skipped" in by_hand.stdout, by_hand.stdout
    under_ci = subprocess.run(argv, capture_output=True, text=True, timeout=300,
                              env={**env, "CI": "true"}, cwd=tmp_path)  # fmt: skip
    assert under_ci.returncode == 1 and "CI=true" in under_ci.stdout, under_ci.stdout


async def test_a_background_engine_whose_database_is_gone_stops(tmp_path: Path) -> None:
    """Its database dropped under it (what a server's reinstall or a removed cluster does): the
    background engine does not loop on errors for ever; it stops after `engine_idle_minutes`
    without an answer and says why in its log."""
    try:
        admin = await asyncpg.connect(ADMIN_URL, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if ci():
            pytest.fail(f"no external PostgreSQL at {ADMIN_URL}: {exc} (CI=true)")
        pytest.skip(f"no external PostgreSQL at {ADMIN_URL}: {exc}")
    name = f"fleet_ext_{uuid.uuid4().hex[:8]}"
    await admin.execute(f"CREATE DATABASE {name}")
    data = tmp_path / "data"
    data.mkdir()
    env = {
        **os.environ,
        "FLEET_DATABASE_URL": ADMIN_URL.rsplit("/", 1)[0] + f"/{name}",
        "FLEET_DATA_DIR": str(data),
        "FLEET_HOST_ID": "gone-db-host",
        "FLEET_ENGINE_IDLE_MINUTES": "0.2",  # 12 s: the drop below comes well before it
    }
    pid = 0
    try:
        start = [sys.executable, "-m", "fleet_core", "engine", "start", "--json"]
        out = subprocess.run(start, env=env, capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        pid = int(json.loads(out.stdout)["pid"])
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        for _ in range(600):  # up to 60 s; it stops after 12 s without an answer
            if not Path(f"/proc/{pid}").exists() or _zombie(pid):
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("the engine still runs a minute after its database was dropped")
        log = (data / "logs" / "fleet.log").read_text()
        assert "background engine: stopping (the database has not answered for 0.2 min" in log
    finally:
        if pid and Path(f"/proc/{pid}").exists():
            os.kill(pid, signal.SIGKILL)
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True
