"""The embedded cluster manager: shared by concurrent starters, survives its starter, handles
stale pid files, and says clearly when PostgreSQL is missing."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from conftest import Pg
from fleet_core.config import Settings
from fleet_core.db.binaries import find_binaries
from fleet_core.db.bootstrap import OWNER_ROLE
from fleet_core.db.cluster_auth import lets_in_without_password
from fleet_core.db.connect import cluster_for, resolve_target
from fleet_core.db.database import ENGINE_ROLE
from fleet_core.db.embedded import ClusterInfo, EmbeddedCluster
from fleet_core.errors import DatabaseError, PostgresNotFoundError

STARTER = """
import sys
from pathlib import Path
from fleet_core.db.embedded import EmbeddedCluster
c = EmbeddedCluster(Path(sys.argv[1]))
c.ensure_running()
print((c.pgdata / "postmaster.pid").read_text().split()[0])
"""


def fleet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fleet_core", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture
def cluster(tmp_path: Path):
    c = EmbeddedCluster(tmp_path / "data")
    try:
        yield c
    finally:
        c.destroy()


def test_concurrent_starters_share_one_server_that_outlives_them(cluster: EmbeddedCluster) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, str(cluster.data_dir)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    pids = {out.strip() for out, _ in outs}
    assert len(pids) == 1  # one server for all three
    assert cluster.is_listening()  # every starter has exited; the server has not
    assert cluster.status() == "running"
    if os.geteuid() == 0:  # as root, the cluster belongs to the unprivileged user
        assert cluster.root.stat().st_uid != 0
        assert cluster.pgdata.stat().st_uid == cluster.root.stat().st_uid
    assert cluster.stop() is True
    assert cluster.status() == "stopped"
    assert cluster.stop() is False


def test_fleet_db_stop_stops_the_embedded_server(cluster: EmbeddedCluster) -> None:
    cluster.ensure_running()
    env = {"FLEET_DATA_DIR": str(cluster.data_dir)}
    result = fleet("db", "stop", env=env)
    assert result.returncode == 0 and result.stdout.strip() == "stopped", result.stderr
    assert not cluster.is_listening()
    assert fleet("db", "stop", env=env).stdout.strip() == "not running"


@pytest.mark.parametrize("owner", ["live-other-process", "dead-process"])
def test_stale_pid_file_is_replaced(cluster: EmbeddedCluster, owner: str) -> None:
    cluster.ensure_running()
    cluster.stop()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        pid = sleeper.pid if owner == "live-other-process" else 2**22 + 17
        (cluster.pgdata / "postmaster.pid").write_text(f"{pid}\n{cluster.pgdata}\n")
        cluster.ensure_running()
        assert cluster.is_listening()
        assert (cluster.pgdata / "postmaster.pid").read_text().split()[0] != str(pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_missing_binaries_give_one_clear_line(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no pg_config, no initdb
    with pytest.raises(PostgresNotFoundError) as err:
        find_binaries(None, search_globs=(), wheel=None)
    message = str(err.value)
    assert "\n" not in message
    assert "apt install postgresql" in message and "FLEET_DATABASE_URL" in message


def test_wrong_fleet_pg_bin_is_named(tmp_path: Path) -> None:
    with pytest.raises(PostgresNotFoundError, match="FLEET_PG_BIN"):
        find_binaries(tmp_path)
    data = tmp_path / "data"
    result = fleet("status", env={"FLEET_PG_BIN": str(tmp_path), "FLEET_DATA_DIR": str(data)})
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "FLEET_PG_BIN" in result.stderr
    assert result.stdout == ""
    cluster = EmbeddedCluster(data)
    assert not cluster.root.exists() and not cluster.lock_file.exists()  # nothing was created


def test_finds_installed_binaries() -> None:
    bins = find_binaries()
    assert bins.major >= 14
    assert Path(bins["initdb"]).exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root needs the cluster outside its home")
def test_root_refuses_an_unreachable_cluster_dir(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    c = EmbeddedCluster(tmp_path / "data", pg_dir=private / "pg")
    with pytest.raises(DatabaseError, match="not reachable by user"):
        c.ensure_running()
    assert oct(private.stat().st_mode & 0o777) == "0o700"  # never chmodded


async def _refused(
    info: ClusterInfo, role: str, tmp_path: Path, password: str | None = None
) -> str:
    """Connect to the cluster's socket as `role` without its password file: the error text."""
    try:
        conn = await asyncpg.connect(
            host=str(info.socket_dir), port=info.port, user=role, database="postgres",
            password=password, passfile=str(tmp_path / "no-such-pgpass"), timeout=10,
        )  # fmt: skip
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{type(exc).__name__}: {exc}"
    await conn.close()
    return ""


async def test_every_role_needs_its_password(pg: Pg, tmp_path: Path) -> None:
    """The socket trusts nobody: the superuser and both fleet roles are refused without their
    password (and with a wrong one); the DSNs, which name the 0600 password file, get in."""
    info = pg.cluster.info
    for role in ("postgres", OWNER_ROLE, ENGINE_ROLE):
        refused = await _refused(info, role, tmp_path)
        assert refused == f'InvalidPasswordError: password authentication failed for user "{role}"'
        assert "InvalidPasswordError" in await _refused(info, role, tmp_path, password="guess")
    st = pg.cluster.passfile.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == os.geteuid()
    conn = await asyncpg.connect(pg.superuser_dsn)
    try:
        methods = await conn.fetch("SELECT DISTINCT auth_method FROM pg_hba_file_rules")
        assert [r["auth_method"] for r in methods] == ["scram-sha-256"]
        stored = await conn.fetch("SELECT rolname, rolpassword FROM pg_authid WHERE rolcanlogin")
        assert {r["rolname"] for r in stored} == {"postgres", OWNER_ROLE, ENGINE_ROLE}
        assert all(r["rolpassword"].startswith("SCRAM-SHA-256$") for r in stored)
    finally:
        await conn.close()
    for dsn in (pg.owner_dsn, pg.engine_dsn):
        c = await asyncpg.connect(dsn)
        await c.close()


async def test_a_cluster_that_trusted_its_socket_is_upgraded_at_start(tmp_path: Path) -> None:
    """A cluster as an older fleet left it (pg_hba.conf `trust`, roles without passwords, no
    password file): the next start gives every role a password, rewrites pg_hba.conf and
    reloads, so the socket alone no longer lets anyone in."""
    settings = Settings(data_dir=tmp_path / "data")
    cluster = cluster_for(settings)
    try:
        target = await resolve_target(settings)
        su = await asyncpg.connect(cluster.info.dsn())
        try:  # back to what older versions made
            (cluster.pgdata / "pg_hba.conf").write_text("local all all trust\n")
            assert await su.fetchval("SELECT pg_reload_conf()")
            for role in ("postgres", OWNER_ROLE, ENGINE_ROLE):
                await su.execute(f'ALTER ROLE "{role}" PASSWORD NULL')
        finally:
            await su.close()
        cluster.passfile.unlink()
        assert await _refused(cluster.info, "postgres", tmp_path) == ""  # trusted: wide open
        socket_path = cluster.socket_dir / f".s.PGSQL.{cluster.info.port}"
        assert lets_in_without_password(socket_path, "postgres") is True

        again = await resolve_target(settings)
        assert again == target
        assert cluster.passfile.exists()
        hba = (cluster.pgdata / "pg_hba.conf").read_text().splitlines()
        rules = [line.split() for line in hba if line.strip() and not line.startswith("#")]
        assert rules and all(rule[-1] == "scram-sha-256" for rule in rules)
        for role in ("postgres", OWNER_ROLE, ENGINE_ROLE):
            assert "InvalidPasswordError" in await _refused(cluster.info, role, tmp_path)
            assert lets_in_without_password(socket_path, role) is False
        for dsn in (again.owner_dsn, again.engine_dsn, cluster.info.dsn()):
            c = await asyncpg.connect(dsn)
            await c.close()
    finally:
        cluster.destroy()
