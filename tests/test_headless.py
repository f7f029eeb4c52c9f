"""`fleet --headless` as a user runs it: a subprocess serving on 127.0.0.1, a token from
`fleet token issue`, and SIGTERM in the middle of a spawn request."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from conftest import eventually, fleet, free_port, git
from fleet_core.runtime.paths import RuntimePaths


def wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    for _ in range(300):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("the server did not start")


async def setup_waiting(su: asyncpg.Connection, worktrees: Path) -> Path:
    """The checkout of the task being spawned, once its setup command runs (the task is
    `spawning` and its checkout exists)."""
    checkout: list[Path] = []

    async def started() -> bool:
        row = await su.fetchrow("SELECT id FROM fleet_tasks WHERE status = 'spawning'")
        if row is not None and (worktrees / str(row["id"]) / ".fleet.toml").exists():
            checkout.append(worktrees / str(row["id"]))
        return bool(checkout)

    await eventually(started, timeout=60)
    return checkout[0]


async def test_serve_then_sigterm_during_a_spawn(
    su: asyncpg.Connection, repo: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # The setup command waits for the test's word, so the spawn request is in flight for sure
    # when SIGTERM arrives, and finishes only after it.
    wait = "while [ ! -e .proceed ]; do sleep 0.05; done"
    (repo / ".fleet.toml").write_text(f'setup = ["sh", "-c", "{wait}"]\n')
    git(repo, "add", ".fleet.toml")
    git(repo, "commit", "-q", "-m", "slow setup")
    ours = {"FLEET_HOST_ID": "headless-host", "FLEET_SECRETS": '{"FLEET_DEMO_DELAY": "0"}',
            "FLEET_GH": "/nonexistent/gh", "FLEET_WORKTREE_DIR": str(tmp_path / "worktrees")}  # fmt: skip
    env = {**os.environ, "FLEET_OPERATOR": "alice", **ours}
    proc = subprocess.Popen([sys.executable, "-m", "fleet_core", "--headless", "--port", str(port)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_ready(url, proc)
        issued = fleet("token", "issue", "--operator", "alice", "--tier", "builder", **ours)
        assert issued.returncode == 0, issued.stderr
        headers = {"Authorization": f"Bearer {issued.stdout.strip()}"}
        added = fleet("repo", "add", str(repo), "--grant", "alice", **ours)
        assert added.returncode == 0, added.stderr
        assert httpx.get(url + "/api/fleet/status", headers=headers).json()["active"] == 0
        answer: dict[str, Any] = {}

        def request() -> None:
            body = {"description": "wait [demo:hang]", "repository": str(repo),
                    "task_type": "docs", "agent_type": "demo"}  # fmt: skip
            r = httpx.post(url + "/api/fleet/spawn", json=body, headers=headers, timeout=30)
            answer["status"], answer["body"] = r.status_code, r.json()

        sender = threading.Thread(target=request)
        sender.start()
        checkout = await setup_waiting(su, tmp_path / "worktrees")
        proc.send_signal(signal.SIGTERM)
        assert sender.is_alive() and not answer  # in flight: the setup is still waiting
        (checkout / ".proceed").touch()
        sender.join(30)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "stopped; agents keep running" in out
    # The request in flight was finished, not cut: the task runs, and its agent outlives the
    # server.
    assert answer["status"] == 201, answer
    row = await su.fetchrow("SELECT id, status, tmux_session FROM fleet_tasks")
    row_id = row["id"]
    assert row["status"] == "running"
    sock = RuntimePaths.under(Path(os.environ["FLEET_DATA_DIR"])).tmux_socket
    try:
        alive = subprocess.run(["tmux", "-L", sock, "has-session", "-t", f"={row['tmux_session']}"])
        assert alive.returncode == 0
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
    # A complete answer: the task as it is now.
    assert answer["body"]["status"] == "running" and answer["body"]["agent_type"] == "demo"
    assert answer["body"]["id"] == str(row_id)
