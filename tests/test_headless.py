"""`fleet --headless` as a user runs it: a subprocess serving on 127.0.0.1, a token from
`fleet token issue`, and SIGTERM in the middle of a spawn request."""

from __future__ import annotations

import json
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

from conftest import fleet, free_port, git
from fleet_core.runtime.local import RuntimePaths


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


async def test_serve_then_sigterm_during_a_spawn(
    su: asyncpg.Connection, repo: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A slow setup command keeps the spawn request in flight when SIGTERM arrives.
    (repo / ".fleet.toml").write_text('setup = ["sleep", "2"]\n')
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
        time.sleep(1.0)  # inside the setup command
        proc.send_signal(signal.SIGTERM)
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
    row = await su.fetchrow("SELECT status, tmux_session FROM fleet_tasks")
    assert row["status"] == "running"
    sock = RuntimePaths.under(Path(os.environ["FLEET_DATA_DIR"])).tmux_socket
    try:
        alive = subprocess.run(["tmux", "-L", sock, "has-session", "-t", f"={row['tmux_session']}"])
        assert alive.returncode == 0
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)
    assert json.dumps(answer["body"])  # a complete JSON answer
