"""What the lifecycle tests share: conductors, each with a monitor, over the test database
(stopped, and the agents' tmux server removed, afterwards), a spawn as alice and a wait for a
task's status. The granted sample repository is conftest's `sample` fixture."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fleet_core.conductor import Actor, Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import SpawnRequest, TaskRecord, Tier
from fleet_core.monitor import Monitor, MonitorConfig

ACTOR = Actor("alice", Tier.SOVEREIGN)
FAST = MonitorConfig(interval_s=0.1, deadline_s=30.0, minute_s=0.3)  # timeout 5 min → 1.5 s
QUICK_RETRIES = {"retry_base_seconds": 0.05, "retry_max_seconds": 0.2}


def base_fields(tmp_path: Path) -> dict[str, Any]:
    """Settings' fields for an engine of the tests' host with the demo agent at full speed."""
    return {
        "data_dir": tmp_path / "data",
        "host_id": "test-host",
        "secrets": {"FLEET_DEMO_DELAY": "0"},
        "kill_grace_seconds": 0.5,
    }


Make = Callable[..., tuple[Conductor, Monitor]]


@asynccontextmanager
async def conductors(db: Database) -> AsyncIterator[Make]:
    """`make(settings, config=FAST)` → a conductor and its monitor."""
    made: list[Conductor] = []

    def make(settings: Settings, config: MonitorConfig = FAST) -> tuple[Conductor, Monitor]:
        c = Conductor.from_settings(settings, db)
        made.append(c)
        return c, Monitor(c, config)

    try:
        yield make
    finally:
        for c in made:
            await c.stop_engine()
        if made:
            await made[0].runtime.tmux.kill_server()


async def spawn(c: Conductor, repo: Path, description: str, **kw: Any) -> TaskRecord:
    """A demo-agent feature task as alice (fields of `kw` override)."""
    request = SpawnRequest.model_validate({
        "description": description, "repository": str(repo), "task_type": "feature",
        "agent_type": "demo", "timeout_minutes": 5, **kw,
    })  # fmt: skip
    out = await c.spawn(ACTOR, request)
    assert out.task is not None
    return out.task


async def until_status(
    c: Conductor, m: Monitor, tid: Any, *statuses: TaskStatus, limit: float = 90
) -> TaskRecord:
    """Monitor cycles (none may report an error) until the task is in one of `statuses`."""
    return await until(c, m, tid, lambda rec: rec.status in statuses, limit)


async def until(
    c: Conductor, m: Monitor, tid: Any, done: Callable[[TaskRecord], bool], limit: float = 90
) -> TaskRecord:
    """Monitor cycles (none may report an error) until the task satisfies `done`."""
    loop = asyncio.get_running_loop()
    end = loop.time() + limit
    while loop.time() < end:
        report = await m.cycle()
        assert report is not None and report.errors == [], report
        rec = await c.registry(ACTOR).get(tid)
        if done(rec):
            return rec
        await c.forges.local.wait_idle()
        await asyncio.sleep(0.05)
    raise AssertionError(
        f"task stayed {rec.status.value}: {rec.failure_context} {rec.review_status}"
    )
