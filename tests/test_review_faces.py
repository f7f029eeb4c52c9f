"""The reviews as users see them: GET /tasks/{id}/reviews and /diff over real HTTP, `fleet
show` and `fleet diff` as subprocesses, after a review that sent the task back once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conftest import Pg, api_server, api_settings, fleet, grant_repo
from fleet_core.auth.keys import KeyStore
from fleet_core.auth.tokens import issue_token
from fleet_core.demo import make_sample
from fleet_core.engine import Engine
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import Tier
from fleet_core.monitor import Monitor, MonitorConfig
from fleet_core.review.reviewers import DEMO_COMMENT

FAST = MonitorConfig(interval_s=0.1, deadline_s=30.0, minute_s=0.3)


@dataclass
class Served:
    client: httpx.AsyncClient
    engine: Engine
    headers: dict[str, str]
    data_dir: Path
    keys: KeyStore


@pytest.fixture
async def served(pg: Pg, su: Any, tmp_path: Path) -> AsyncIterator[Served]:
    settings = api_settings(pg, tmp_path, "review-host")
    settings = settings.model_copy(update={"retry_base_seconds": 0.05, "retry_max_seconds": 0.2})
    async with api_server(settings) as (url, engine, keys):  # noqa: SIM117 (needs url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            token = await issue_token(keys, "alice", Tier.BUILDER)
            auth = {"Authorization": f"Bearer {token}"}
            yield Served(client, engine, auth, settings.data_dir, keys)


async def test_reviews_and_diff_over_the_api_and_the_cli(served: Served, tmp_path: Path) -> None:
    sample = make_sample(tmp_path / "demo")
    await grant_repo(served.engine.db, sample, "alice")
    body = {"description": "Add a power function [demo:review-reject-once]",
            "repository": str(sample), "task_type": "feature", "agent_type": "demo",
            "max_retries": 1}  # fmt: skip
    r = await served.client.post("/api/fleet/spawn", json=body, headers=served.headers)
    assert r.status_code == 201, r.text
    tid = r.json()["id"]
    early = await served.client.get(f"/api/fleet/tasks/{tid}/diff", headers=served.headers)
    assert early.status_code == 409 and "no pull request yet" in early.json()["message"]
    c = served.engine.conductor
    monitor = Monitor(c, FAST)
    loop = asyncio.get_running_loop()
    end = loop.time() + 90
    while loop.time() < end:
        await monitor.cycle()
        got = await served.client.get(f"/api/fleet/tasks/{tid}", headers=served.headers)
        if got.json()["status"] == TaskStatus.READY.value:
            break
        await c.forges.local.wait_idle()
        await asyncio.sleep(0.05)
    assert got.json()["status"] == "ready", got.json()

    r = await served.client.get(f"/api/fleet/tasks/{tid[:8]}/reviews", headers=served.headers)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["review_status"]["verdict"] == "approved"
    verdicts = sorted((x["attempt"], x["reviewer"], x["verdict"]) for x in doc["reviews"])
    assert verdicts == [
        (1, "architecture", "approve"), (1, "logic", "approve"),
        (1, "security", "request_changes"),
        (2, "architecture", "approve"), (2, "logic", "approve"), (2, "security", "approve"),
    ]  # fmt: skip
    [change] = [x for x in doc["reviews"] if x["verdict"] == "request_changes"]
    assert change["comments"][0]["body"] == DEMO_COMMENT
    assert change["comments"][0]["path"] == f"fleet-demo/{tid}.md"

    r = await served.client.get(f"/api/fleet/tasks/{tid}/diff", headers=served.headers)
    assert r.status_code == 200 and f"+++ b/fleet-demo/{tid}.md" in r.json()["diff"]
    bob = {"Authorization": f"Bearer {await issue_token(served.keys, 'bob', Tier.BUILDER)}"}
    other = await served.client.get(f"/api/fleet/tasks/{tid}/reviews", headers=bob)
    assert other.status_code == 404  # another operator's task

    env = {"FLEET_DATA_DIR": str(served.data_dir), "FLEET_WORKTREE_DIR": str(tmp_path / "wt")}
    shown = await asyncio.to_thread(fleet, "show", tid[:8], **env)
    assert shown.returncode == 0, shown.stderr
    assert "reviews: approved, 3 approval(s), attempt 2" in shown.stdout
    assert (
        "definition of done: held\n  ✓ pr: #1\n  ✓ synced: merges cleanly into main\n"
        "  ✓ ci: passing\n  ✓ reviews: approved" in shown.stdout
    )
    detail = (await served.client.get(f"/api/fleet/tasks/{tid}", headers=served.headers)).json()
    assert detail["dod"]["ok"] is True and len(detail["dod"]["items"]) == 4
    assert "✗ attempt 1 security     request_changes" in shown.stdout
    assert f"fleet-demo/{tid}.md:" in shown.stdout and DEMO_COMMENT in shown.stdout
    diff = await asyncio.to_thread(fleet, "diff", tid[:8], **env)
    assert diff.returncode == 0, diff.stderr
    assert f"+++ b/fleet-demo/{tid}.md" in diff.stdout
    stat = await asyncio.to_thread(fleet, "diff", "--stat", tid[:8], **env)
    assert stat.stdout.strip() == f"a/fleet-demo/{tid}.md b/fleet-demo/{tid}.md"
    missing = await asyncio.to_thread(fleet, "diff", "deadbeef", **env)
    assert missing.returncode == 3 and "deadbeef" in missing.stderr
