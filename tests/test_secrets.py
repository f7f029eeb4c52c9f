"""Operators' secrets: `fleet secrets` as a user runs it, the API routes, what reaches an
agent's environment (a real custom agent in tmux, spawned through the real HTTP API and the
real CLI), and the master key's fingerprint refusing a wrong FLEET_KEY_ENCRYPTION_KEY."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import pty
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from conftest import Pg, api_server, eventually, free_port, grant_repo
from fleet_core.auth.master import check_master_key, fingerprint
from fleet_core.auth.secret_store import SecretStore
from fleet_core.auth.tokens import issue_token
from fleet_core.config import Settings
from fleet_core.db.database import Database
from fleet_core.engine import running_engine
from fleet_core.errors import BadInputError, ConfigError
from fleet_core.models import AgentType, Tier
from fleet_core.runtime.adapters import Adapter
from fleet_core.runtime.paths import RuntimePaths
from fleet_core.runtime.secrets import SecretProvider

# A custom agent that reads its prompt and writes its whole environment into its checkout.
AGENT = (
    "import json, os, sys; sys.stdin.read(); "
    "open('.env.tmp', 'w').write(json.dumps(dict(os.environ))); "
    "os.replace('.env.tmp', 'agent-env.json')"
)
TASK_VARIABLES = {"FLEET_TASK_ID", "FLEET_AGENT_TYPE", "FLEET_ATTEMPT"}


def cli(*args: str, input: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """`fleet ARGS` as alice (like conftest's fleet()), with `input` on stdin (else none)."""
    return subprocess.run(
        [sys.executable, "-m", "fleet_core", *args],
        input=input if input is not None else "",
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "FLEET_OPERATOR": "alice", **env},
    )


def file_key(pg: Pg) -> bytes:
    """The master key the CLI uses here: the key file of the session's data dir."""
    return (pg.settings.data_dir / "keys" / "master.key").read_bytes()


def b64key(seed: str) -> str:
    return base64.b64encode(seed.encode().ljust(32, b"k")[:32]).decode()


def log_text(pg: Pg) -> str:
    log_dir = pg.settings.data_dir / "logs"
    return "".join(p.read_text(errors="replace") for p in log_dir.glob("fleet.log*"))


# -- the command line ---------------------------------------------------------------------------


async def test_set_list_unset_through_the_cli(su: asyncpg.Connection, pg: Pg) -> None:
    value = f"s3cret-{uuid.uuid4().hex}"
    out = cli("secrets", "set", "MY_TOKEN", input=value + "\n")
    assert out.returncode == 0, out.stderr
    assert "stored MY_TOKEN for alice" in out.stdout and "no agent type lists" in out.stdout
    row = await su.fetchrow("SELECT * FROM fleet_secrets")
    assert (row["operator_id"], row["name"]) == ("alice", "MY_TOKEN")
    assert value.encode() not in bytes(row["ciphertext"])
    # Sealed with the master key, bound to its operator and name; the newline was dropped.
    plain = AESGCM(file_key(pg)).decrypt(row["nonce"], row["ciphertext"], b"alice\0MY_TOKEN")
    assert plain == value.encode()
    stored = await su.fetchval("SELECT fingerprint FROM fleet_master_key")
    assert stored == fingerprint(file_key(pg))

    first = json.loads(cli("secrets", "list", "--json").stdout)
    assert [(s["name"], s["agents"]) for s in first] == [("MY_TOKEN", [])]
    again = cli("secrets", "set", "MY_TOKEN", "--json", input="another value")
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert (doc["created"], doc["name"], doc["set_at"]) == (False, "MY_TOKEN", first[0]["set_at"])
    claude = cli("secrets", "set", "ANTHROPIC_API_KEY", input="sk-ant-" + value)
    assert claude.returncode == 0 and "given to aider, claude_code agents" in claude.stdout

    listed = cli("secrets", "list")
    assert listed.returncode == 0, listed.stderr
    assert "ANTHROPIC_API_KEY" in listed.stdout and "MY_TOKEN" in listed.stdout
    doc = json.loads(cli("secrets", "list", "--json").stdout)
    assert [(s["name"], s["agents"]) for s in doc] == [
        ("ANTHROPIC_API_KEY", ["aider", "claude_code"]), ("MY_TOKEN", []),
    ]  # fmt: skip
    assert "No secrets for bob" in cli("secrets", "list", FLEET_OPERATOR="bob").stdout

    gone = cli("secrets", "unset", "MY_TOKEN")
    assert gone.returncode == 0 and "deleted MY_TOKEN for alice" in gone.stdout
    missing = cli("secrets", "unset", "MY_TOKEN", "--json")
    assert missing.returncode == 3 and missing.stdout == ""
    assert json.loads(missing.stderr)["error"] == "not_found"
    assert await su.fetchval("SELECT array_agg(name) FROM fleet_secrets") == ["ANTHROPIC_API_KEY"]
    every = [out, first, again, claude, listed, gone, missing]
    assert not any(value in str(o) for o in every)
    assert value not in log_text(pg)


async def test_bad_input_exits_2_with_one_line_and_stores_nothing(su: asyncpg.Connection) -> None:
    cases = [
        (("lower",), "x", "name"),
        (("1ABC",), "x", "name"),
        (("PATH",), "x", "reserved"),
        (("HOME",), "x", "reserved"),
        (("FLEET_KEY_ENCRYPTION_KEY",), "x", "reserved"),
        (("LD_PRELOAD",), "x", "reserved"),
        (("MY_TOKEN",), "", "value: is empty"),
        (("MY_TOKEN",), "\n", "value: is empty"),
        (("MY_TOKEN",), "a\0b", "NUL"),
        (("MY_TOKEN",), "x" * 40000, "longer than"),
    ]
    for args, value, needle in cases:
        out = cli("secrets", "set", *args, input=value)
        assert out.returncode == 2, (args, out.stderr)
        assert needle in out.stderr and out.stderr.count("\n") == 1, out.stderr
    as_json = cli("secrets", "set", "bad-name", "--json", input="x")
    assert as_json.returncode == 2 and json.loads(as_json.stderr)["field"] == "name"
    in_argv = cli("secrets", "set", "MY_TOKEN", "the-value-on-the-command-line")
    assert in_argv.returncode == 2  # a value is never taken from argv
    assert cli("secrets", "unset", "lower").returncode == 2
    observer = cli("secrets", "set", "MY_TOKEN", input="x", FLEET_TIER="observer")
    assert observer.returncode == 4 and "needs tier builder" in observer.stderr
    assert await su.fetchval("SELECT count(*) FROM fleet_secrets") == 0


# -- the master key ---------------------------------------------------------------------------


async def test_a_wrong_master_key_is_refused_at_start(
    su: asyncpg.Connection, pg: Pg, tmp_path: Path
) -> None:
    assert cli("secrets", "set", "MY_TOKEN", input="v1").returncode == 0  # stores the key's print
    wrong = {"FLEET_KEY_ENCRYPTION_KEY": b64key("another host's key")}
    refused = cli("secrets", "set", "OTHER", input="v2", **wrong)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1
    assert "FLEET_KEY_ENCRYPTION_KEY" in refused.stderr and "fingerprint" in refused.stderr
    port = str(free_port())
    served = subprocess.run(
        [sys.executable, "-m", "fleet_core", "--headless", "--port", port],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "FLEET_OPERATOR": "alice", **wrong},
    )  # fmt: skip
    assert served.returncode == 2 and "serving" not in served.stdout
    assert served.stderr.count("\n") == 1 and "FLEET_KEY_ENCRYPTION_KEY" in served.stderr
    settings = Settings(data_dir=pg.settings.data_dir, worktree_dir=tmp_path / "w",
                        key_encryption_key=wrong["FLEET_KEY_ENCRYPTION_KEY"])  # fmt: skip
    with pytest.raises(ConfigError, match="FLEET_KEY_ENCRYPTION_KEY") as caught:
        async with running_engine(settings, background=False):
            pass
    assert "\n" not in str(caught.value)
    # A database from before fingerprints: the first key whose data it opens is recorded.
    await su.execute("DELETE FROM fleet_master_key")
    with pytest.raises(ConfigError, match="does not decrypt"):
        async with running_engine(settings, background=False):
            pass
    right = Settings(data_dir=pg.settings.data_dir, worktree_dir=tmp_path / "w")
    async with running_engine(right, background=False):
        pass
    stored = await su.fetchval("SELECT fingerprint FROM fleet_master_key")
    assert stored == fingerprint(file_key(pg))
    assert await su.fetchval("SELECT count(*) FROM fleet_secrets") == 1


async def test_every_engine_reads_the_same_values_and_a_wrong_key_reads_none(
    db: Database, su: asyncpg.Connection
) -> None:
    key = b"k" * 32

    def store(k: bytes) -> SecretStore:
        return SecretStore(db, lambda: k, "FLEET_KEY_ENCRYPTION_KEY")

    await store(key).set("bob", "MY_TOKEN", "bob's value")
    adapter = Adapter(AgentType.CUSTOM, ("true",), ("MY_TOKEN", "ONLY_IN_ENV"))
    env = {"MY_TOKEN": "host env", "ONLY_IN_ENV": "from the environment"}
    # Two hosts with different environments, the same key: bob gets his stored value on both
    # (a retry elsewhere gets what the first attempt got) and nothing of either environment.
    for host_env in (env, {}):
        provider = SecretProvider(db, environ=host_env, store=store(key), local_operator="alice")
        got = await provider.issue(task_id=uuid.uuid4(), operator_id="bob", adapter=adapter)
        assert (got["MY_TOKEN"], "ONLY_IN_ENV" in got) == ("bob's value", False)
    local = SecretProvider(db, environ=env, store=store(key), local_operator="alice")
    got = await local.issue(task_id=uuid.uuid4(), operator_id="alice", adapter=adapter)
    assert (got["MY_TOKEN"], got["ONLY_IN_ENV"]) == ("host env", "from the environment")
    await store(key).set("alice", "MY_TOKEN", "alice's value")  # stored wins over environment
    got = await local.issue(task_id=uuid.uuid4(), operator_id="alice", adapter=adapter)
    assert got["MY_TOKEN"] == "alice's value"
    wrong = SecretProvider(db, store=store(b"w" * 32), local_operator="alice")
    with pytest.raises(ConfigError, match="FLEET_KEY_ENCRYPTION_KEY"):
        await wrong.ready()
    with pytest.raises(ConfigError, match="FLEET_KEY_ENCRYPTION_KEY"):
        await wrong.issue(task_id=uuid.uuid4(), operator_id="bob", adapter=adapter)
    # A row copied to another operator does not open: the operator and name are sealed in.
    await su.execute(
        "INSERT INTO fleet_secrets (operator_id, name, nonce, ciphertext) "
        "SELECT 'carol', name, nonce, ciphertext FROM fleet_secrets WHERE operator_id = 'bob'"
    )
    with pytest.raises(ConfigError, match="does not decrypt"):
        await store(key).values("carol", ["MY_TOKEN"])
    with pytest.raises(BadInputError, match="reserved"):
        await store(key).set("bob", "FLEET_DATABASE_URL", "x")
    assert await check_master_key(db, key, "test") == fingerprint(key)
    audit = await su.fetch("SELECT detail::text AS d FROM fleet_audit")
    assert len(audit) == 4 and not any("value" in r["d"] or "environment" in r["d"] for r in audit)


# -- what reaches an agent ----------------------------------------------------------------------


async def test_an_agent_gets_its_operators_secrets_and_never_the_engines_environment(
    su: asyncpg.Connection,
    pg: Pg,
    repo: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    alice_value, bob_value = f"alice-{uuid.uuid4().hex}", f"bob-{uuid.uuid4().hex}"
    engine_value = f"engine-{uuid.uuid4().hex}"
    assert cli("secrets", "set", "MY_TOKEN", input=alice_value).returncode == 0
    monkeypatch.setenv("ENGINE_SIDE_TOKEN", engine_value)  # in the engine's own environment
    monkeypatch.setenv("FLEET_HOST_ID", engine_value)  # one of fleet's settings
    allow = ["MY_TOKEN", "ENGINE_SIDE_TOKEN", "FLEET_HOST_ID", "CONFIG_ONLY"]
    settings = Settings(
        data_dir=pg.settings.data_dir,
        worktree_dir=tmp_path / "worktrees",
        operator="alice",  # the local operator: the OS user that runs this engine
        host_id="secrets-host",
        agents={"custom": {"command": [sys.executable, "-c", AGENT], "env": allow}},
        secrets={"CONFIG_ONLY": "from fleet.toml"},
        kill_grace_seconds=0.5,
        gh="/nonexistent/gh",
    )
    async with api_server(settings) as (url, engine, keys):
        await grant_repo(engine.db, repo, "bob", "alice")
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:

            async def as_(who: str) -> dict[str, str]:
                return {"Authorization": f"Bearer {await issue_token(keys, who, Tier.BUILDER)}"}

            bob, carol = await as_("bob"), await as_("carol")
            put = await client.put("/api/fleet/secrets/MY_TOKEN", json={"value": bob_value},
                                   headers=bob)  # fmt: skip
            assert put.status_code == 201 and bob_value not in put.text
            assert (put.json()["created"], put.json()["agents"]) == (True, ["custom"])
            bad = await client.put("/api/fleet/secrets/PATH", json={"value": "x"}, headers=bob)
            assert bad.status_code == 400 and bad.json()["field"] == "name"
            listed = await client.get("/api/fleet/secrets", headers=bob)
            assert [s["name"] for s in listed.json()] == ["MY_TOKEN"]
            assert (await client.get("/api/fleet/secrets", headers=carol)).json() == []
            gone = await client.delete("/api/fleet/secrets/MY_TOKEN", headers=carol)
            assert gone.status_code == 404 and gone.json()["error"] == "not_found"

            envs: dict[str, dict[str, str]] = {}
            tasks: dict[str, dict[str, Any]] = {}
            for who in ("bob", "alice"):
                body = {"description": "print the environment", "repository": str(repo),
                        "task_type": "docs", "agent_type": "custom"}  # fmt: skip
                r = await client.post("/api/fleet/spawn", json=body, headers=await as_(who))
                assert r.status_code == 201, r.text
                tasks[who] = r.json()
                written = Path(tasks[who]["worktree_path"]) / "agent-env.json"
                await eventually(lambda w=written: _exists(w))
                envs[who] = json.loads(written.read_text())
            pane = await client.get(f"/api/fleet/tasks/{tasks['bob']['id']}/logs",
                                    headers=bob)  # fmt: skip
            assert pane.status_code == 200

    bob_env, alice_env = envs["bob"], envs["alice"]
    assert bob_env["MY_TOKEN"] == bob_value and bob_env["CONFIG_ONLY"] == "from fleet.toml"
    assert "ENGINE_SIDE_TOKEN" not in bob_env
    assert alice_env["MY_TOKEN"] == alice_value and alice_env["ENGINE_SIDE_TOKEN"] == engine_value
    assert engine_value not in json.dumps(bob_env)
    for env in (bob_env, alice_env):
        assert {k for k in env if k.startswith("FLEET_")} == TASK_VARIABLES
    assert bob_env["FLEET_TASK_ID"] == tasks["bob"]["id"]

    issued = await su.fetch(
        "SELECT task_id, detail::text AS detail FROM fleet_audit "
        "WHERE event_type = 'fleet.secrets_issued'"
    )
    audit = {r["task_id"]: json.loads(r["detail"]) for r in issued}
    bob_audit = audit[uuid.UUID(tasks["bob"]["id"])]
    alice_audit = audit[uuid.UUID(tasks["alice"]["id"])]
    assert bob_audit["missing"] == ["ENGINE_SIDE_TOKEN", "FLEET_HOST_ID"]
    assert alice_audit["missing"] == ["FLEET_HOST_ID"]
    assert "MY_TOKEN" in bob_audit["names"] and "ENGINE_SIDE_TOKEN" in alice_audit["names"]
    trail = "".join(r["d"] for r in await su.fetch("SELECT detail::text AS d FROM fleet_audit"))
    listed_cli = cli("secrets", "list", "--json").stdout + cli("secrets", "list").stdout
    shown = [trail, listed_cli, pane.text, log_text(pg), caplog.text]
    for value in (alice_value, bob_value, engine_value):
        assert not any(value in text for text in shown), value


async def test_the_cli_spawn_passes_a_stored_secret_to_the_agent(
    su: asyncpg.Connection, repo: Path
) -> None:
    value = f"cli-{uuid.uuid4().hex}"
    agents = json.dumps({"custom": {"command": [sys.executable, "-c", AGENT], "env": ["MY_TOKEN"]}})
    env = {"FLEET_AGENTS": agents, "MY_TOKEN": "the CLI's own environment"}
    try:
        assert cli("secrets", "set", "MY_TOKEN", input=value, **env).returncode == 0
        out = cli("spawn", "--repo", str(repo), "--type", "docs", "--agent", "custom", "--json",
                  "print the environment", **env)  # fmt: skip
        assert out.returncode == 0, out.stderr
        task = json.loads(out.stdout)
        written = Path(task["worktree_path"]) / "agent-env.json"
        await eventually(lambda: _exists(written))
        assert json.loads(written.read_text())["MY_TOKEN"] == value  # stored beats environment
        logs = cli("logs", task["id"], **env)
        assert logs.returncode == 0 and value not in logs.stdout
    finally:  # the CLI's tmux server, on the session's data dir
        socket = RuntimePaths.under(Path(os.environ["FLEET_DATA_DIR"])).tmux_socket
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)


async def _exists(path: Path) -> bool:
    return path.exists()


async def test_on_a_terminal_the_value_is_prompted_for_without_echo(
    su: asyncpg.Connection, pg: Pg
) -> None:
    value = f"typed-{uuid.uuid4().hex}"
    pid, fd = pty.fork()
    if pid == 0:  # the child: `fleet secrets set` on the pty
        env = {**os.environ, "FLEET_OPERATOR": "alice"}
        os.execve(sys.executable, [sys.executable, "-m", "fleet_core", "secrets", "set",
                                   "TYPED_TOKEN"], env)  # fmt: skip

    async def converse() -> bytes:
        seen = b""
        while b"not echoed" not in seen:
            seen += await asyncio.to_thread(os.read, fd, 1024)
        os.write(fd, value.encode() + b"\n")
        while True:
            try:
                chunk = await asyncio.to_thread(os.read, fd, 1024)
            except OSError:  # EIO: the child closed the terminal
                return seen
            if not chunk:
                return seen
            seen += chunk

    try:
        seen = await asyncio.wait_for(converse(), 60)
    except BaseException:
        os.kill(pid, signal.SIGKILL)
        raise
    _, status = os.waitpid(pid, 0)
    os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 0, seen
    assert b"stored TYPED_TOKEN for alice" in seen and value.encode() not in seen
    row = await su.fetchrow("SELECT nonce, ciphertext FROM fleet_secrets")
    plain = AESGCM(file_key(pg)).decrypt(row["nonce"], row["ciphertext"], b"alice\0TYPED_TOKEN")
    assert plain == value.encode()
