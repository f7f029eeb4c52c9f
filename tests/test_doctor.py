"""`fleet doctor` and what a missing sandbox does to each face."""

from __future__ import annotations

import json
import os
import shutil
import sys

from conftest import fleet


def test_doctor_lists_every_tool_with_its_version() -> None:
    out = fleet("doctor", "--json")
    doc = json.loads(out.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert {"sandbox", "network helper", "tmux", "git", "postgresql", "gh"} <= set(checks)
    assert {f"agent {a}" for a in ("claude_code", "codex", "gemini", "aider", "demo")} <= set(
        checks
    )
    assert checks["tmux"]["state"] == "ok" and checks["tmux"]["detail"].startswith("tmux ")
    assert checks["git"]["detail"].startswith("git version")
    if shutil.which("bwrap"):
        assert checks["sandbox"]["detail"].startswith("bubblewrap ")
    assert out.returncode == (0 if doc["ok"] else 1)
    text = fleet("doctor")
    assert len(text.stdout.splitlines()) == len(checks)  # one line each


def test_doctor_fails_when_what_the_configuration_needs_is_missing() -> None:
    # Only the interpreter's own directory on PATH: no tmux, no git, no bubblewrap.
    out = fleet("doctor", "--json", PATH=str(sys.executable).rsplit("/", 1)[0],
                FLEET_SANDBOX="required")  # fmt: skip
    assert out.returncode == 1
    checks = {c["name"]: c for c in json.loads(out.stdout)["checks"]}
    assert checks["tmux"]["state"] == "missing" and "install tmux" in checks["tmux"]["detail"]
    assert checks["sandbox"]["state"] == "missing" and checks["sandbox"]["needed"]
    auto = fleet("doctor", "--json", PATH=str(sys.executable).rsplit("/", 1)[0])
    sandbox = {c["name"]: c for c in json.loads(auto.stdout)["checks"]}["sandbox"]
    assert sandbox["state"] == "warn" and not sandbox["needed"]  # auto: runs unsandboxed


def test_headless_refuses_to_start_without_a_sandbox(tmp_path) -> None:
    out = fleet("--headless", "--port", "1", PATH=str(sys.executable).rsplit("/", 1)[0])
    assert out.returncode != 0
    assert "sandbox = required" in out.stderr and "bubblewrap" in out.stderr


def test_status_says_when_agents_would_run_unsandboxed() -> None:
    assert "UNSANDBOXED" not in fleet("status").stdout or not shutil.which("bwrap")
    off = fleet("status", FLEET_SANDBOX="off")
    assert off.returncode == 0
    assert off.stdout.rstrip().endswith(
        "WARNING: agents run UNSANDBOXED here: sandbox = off in the configuration"
    )


def test_doctor_says_which_docker_and_which_agent_images() -> None:
    out = fleet("doctor", "--json")
    container = {c["name"]: c for c in json.loads(out.stdout)["checks"]}["container"]
    if container["state"] != "ok":  # no daemon here: only CI must have one
        assert not os.environ.get("CI"), container
        return
    assert container["detail"].startswith("Docker ") and "agent images: " in container["detail"]
    gone = fleet("doctor", "--json", DOCKER_HOST="unix:///nonexistent/docker.sock")
    doc = json.loads(gone.stdout)
    checks = {c["name"]: c for c in doc["checks"]}
    assert checks["container"]["state"] == "warn" and not checks["container"]["needed"]
    assert "no Docker daemon reachable at unix:///nonexistent" in checks["container"]["detail"]
    needed = fleet("doctor", "--json", DOCKER_HOST="unix:///nonexistent/docker.sock",
                   FLEET_RUNTIME="container")  # fmt: skip
    assert needed.returncode == 1
    check = {c["name"]: c for c in json.loads(needed.stdout)["checks"]}["container"]
    assert check["state"] == "missing" and check["needed"]
