"""`fleet demo`: the whole lifecycle, offline, in about a minute.

A sample repository with a small unittest suite and a bare remote under the data dir (the
local forge, its CI command in `.fleet.toml`), and demo-agent tasks that show every path: one
reaches ready and is merged, one breaks CI on its first attempt and is fixed on the retry,
one hangs until its timeout, one is killed like the OOM killer does and retried with a
smaller prompt budget, and two over the operator's limit wait in the queue. The demo runs with
short intervals and timeouts of its own; tasks of earlier demos are removed first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from fleet_core.conductor import Actor, Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Tenant
from fleet_core.engine import Engine
from fleet_core.engine_role import served_engine
from fleet_core.errors import ConflictError, FleetError, RepositoryNotFoundError
from fleet_core.events import EventBus, EventType, FleetEvent
from fleet_core.lifecycle import TERMINAL, TaskStatus
from fleet_core.models import SpawnRequest, TaskRecord, Tier
from fleet_core.monitor import MonitorConfig

TASKS = [
    ("feature", "Add a multiply function to calc.py, with a test", 2),
    ("bug_fix", "Fix the rounding in divide() [demo:ci-fail-once]", 2),
    ("refactor", "Split calc.py into a package [demo:hang]", 1),
    ("feature", "Add a big-number mode [demo:oom]", 1),
    ("docs", "Document calc.py in the README", 1),
    ("docs", "Write a CHANGELOG entry", 1),
]
CALC = '''"""A tiny calculator: the demo's sample code."""


def add(a, b):
    return a + b


def divide(a, b):
    return a / b
'''
TESTS = """import pathlib
import unittest

import calc


class CalcTest(unittest.TestCase):
    def test_add(self):
        self.assertEqual(calc.add(2, 3), 5)

    def test_divide(self):
        self.assertEqual(calc.divide(6, 3), 2)

    def test_no_broken_change(self):
        marker = pathlib.Path("fleet-demo/CI_FAIL")
        self.assertFalse(marker.exists(), marker.read_text() if marker.exists() else "")


if __name__ == "__main__":
    unittest.main()
"""
GIT_ID = ["-c", "user.name=fleet demo", "-c", "user.email=demo@fleet.invalid"]


def demo_settings(settings: Settings, repo: Path) -> Settings:
    return settings.model_copy(
        update={
            "tier": Tier.ARCHITECT,  # 3 agents at once: the other tasks wait in the queue
            "secrets": {**settings.secrets, "FLEET_DEMO_DELAY": "0.4"},
            "retry_base_seconds": 1.0,
            "retry_max_seconds": 3.0,
            "queue_poll_seconds": 0.5,
            "kill_grace_seconds": 1.0,
            "repos": {**settings.repos, str(repo): {"forge": "local"}},
        }
    )


DEMO_MONITOR = MonitorConfig(interval_s=1.0, deadline_s=20.0, minute_s=2.0)  # timeout 5 → 10 s


def make_sample(root: Path) -> Path:
    """A fresh sample repository at root/sample with its bare remote root/sample.git."""
    work, bare = root / "sample", root / "sample.git"
    for old in (work, bare):
        if old.exists():
            shutil.rmtree(old)
    root.mkdir(parents=True, exist_ok=True)

    def git(*args: str, cwd: Path = work) -> None:
        subprocess.run(["git", "-C", str(cwd), *GIT_ID, *args], check=True, capture_output=True)

    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(bare)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "calc.py").write_text(CALC)
    (work / "test_calc.py").write_text(TESTS)
    ci = [sys.executable, "-m", "unittest", "-q"]
    (work / ".fleet.toml").write_text(f'forge = "local"\nci = {json.dumps(ci)}\n')
    git("add", "-A")
    git("commit", "-q", "-m", "A tiny calculator")
    git("remote", "add", "origin", str(bare))
    git("push", "-q", "-u", "origin", "main")
    return work


async def on_sample(conductor: Conductor, actor: Actor, repo: Path) -> list[TaskRecord]:
    """The actor's tasks on the sample repository."""
    return [r for r in await conductor.registry(actor).query(limit=1000)
            if r.repository == str(repo)]  # fmt: skip


async def others_on_sample(conductor: Conductor, actor: Actor, repo: Path) -> list[TaskRecord]:
    """Tasks on the sample repository that no demo made (spawned there by hand): the demo
    recreates that repository, so it asks before touching them."""
    return [r for r in await on_sample(conductor, actor, repo) if not r.demo]


async def remove_earlier(
    conductor: Conductor, actor: Actor, repo: Path, *, others: bool = False
) -> int:
    """Stop and delete the tasks earlier demos made (marked `demo`), and, when the operator
    agreed (`others`), the other tasks on the sample repository; forget the sample remote's
    PR numbers and CI results. The monitor may move a task meanwhile, so each task is re-read
    and the sweep repeated until none is left."""
    removed = 0
    for _ in range(5):
        earlier = [r for r in await on_sample(conductor, actor, repo) if r.demo or others]
        if not earlier:
            break
        for rec in earlier:
            with contextlib.suppress(FleetError):
                if rec.status not in TERMINAL:
                    await conductor.stop(actor, str(rec.id))
            with contextlib.suppress(FleetError):
                try:
                    await conductor.delete(actor, str(rec.id))
                except FleetError:  # a throwaway sample: drop the row even if cleanup fails
                    await conductor.registry(actor).delete(rec.id)
                removed += 1
    state = conductor.forges.local.state_of(repo.parent / "sample.git")
    if state.exists():
        shutil.rmtree(state)
    return removed


async def register_sample(engine: Engine, actor: Actor, repo: Path) -> None:
    """The sample is a repository like any other: registered (once) and granted to the demo's
    operator, also when an earlier demo registered it for another local operator."""
    repos = engine.conductor.repositories
    try:
        await repos.ensure_local(actor.operator_id, str(repo), name="fleet-demo")
    except RepositoryNotFoundError:
        known = [r for r in await repos.list_for(Tenant.admin()) if r.path == str(repo)]
        if not known:
            raise
        await repos.grant(known[0].name, actor.operator_id, by=actor.operator_id)


class Narrator:
    """One line per transition (and per queue, pause, stall event)."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.names: dict[str, str] = {}
        self.begin = time.monotonic()

    def __call__(self, event: FleetEvent) -> None:
        tid = str(event.task_id) if event.task_id else ""
        d = event.data
        if d.get("description"):
            self.names[tid] = str(d["description"])
        name = self.names.get(tid, tid[:8])[:44]
        if event.type is EventType.STATUS_CHANGED:
            why = d.get("reason") or ""
            if d["to"] == "retrying":
                why += f" (attempt {d.get('retry_count', 0) + 1}, budget {d.get('prompt_budget')})"
            text = f"{d['from']:>10} → {d['to']:<10} {why}"
        elif event.type is EventType.QUEUED:
            name = "(over the limit)"
            text = f"{'':>10}   queued     position {d.get('position')}"
        elif event.type in (EventType.PAUSED, EventType.STALLED, EventType.SPAWN_FAILED):
            text = f"{'':>10}   {event.type.value:<10} {d}"
        else:
            return
        self.out(f"{time.monotonic() - self.begin:6.1f}s  {name:<44} {text}")


async def run_demo(
    settings: Settings,
    *,
    out: Callable[[str], None] = print,
    limit_s: float = 150.0,
    others: bool = False,
) -> dict[str, str]:
    """Run the demo to its end (every task ready, merged or ended for good, or `limit_s`);
    returns each task's final status by name."""
    root = settings.data_dir / "demo"
    repo = root / "sample"
    settings = demo_settings(settings, repo)
    actor = Actor(settings.operator, settings.tier)
    bus = EventBus()
    bus.subscribe("*", Narrator(out))
    # The demo's engine has its own short intervals: a background engine steps aside for it.
    async with served_engine(settings, "demo", tenant=actor.tenant, bus=bus,
                             config=DEMO_MONITOR, evict=True) as engine:  # fmt: skip
        count = await start_demo(engine, actor, out, others=others)
        return await watch(engine, actor, repo, count, out, limit_s)


async def start_demo(
    engine: Engine, actor: Actor, out: Callable[[str], None], *, others: bool = False
) -> int:
    """Remove an earlier demo's tasks (and, when the operator agreed, the other tasks on the
    sample repository), make a fresh sample repository, request the tasks. Refuses, touching
    nothing, when tasks the demo did not make use the sample and the operator did not agree."""
    root = engine.settings.data_dir / "demo"
    repo = root / "sample"
    if not others and (found := await others_on_sample(engine.conductor, actor, repo)):
        raise ConflictError(
            f"{len(found)} task(s) not made by a demo use the demo's sample repository {repo} "
            f"({', '.join(r.short_id for r in found[:5])}); the demo recreates it: run "
            "`fleet demo --yes` to remove them too, or delete them first"
        )
    removed = await remove_earlier(engine.conductor, actor, repo, others=others)
    await asyncio.to_thread(make_sample, root)
    await register_sample(engine, actor, repo)
    out(f"fleet demo: sample repository {repo} (local forge, CI: unittest); "
        f"{removed} task(s) of an earlier demo removed")  # fmt: skip
    return await spawn_all(engine, actor, repo, out)


async def spawn_all(engine: Engine, actor: Actor, repo: Path, out: Callable[[str], None]) -> int:
    for i, (task_type, description, retries) in enumerate(TASKS):
        request = SpawnRequest.model_validate({
            "description": description, "repository": str(repo), "task_type": task_type,
            "agent_type": "demo", "max_retries": retries, "timeout_minutes": 5,
            "idempotency_key": f"demo-{datetime.now(UTC):%Y%m%dT%H%M%S}-{i}",
        })  # fmt: skip
        await engine.conductor.spawn(actor, request, queue=True, demo=True)
    out(
        f"fleet demo: {len(TASKS)} tasks requested; watching (Ctrl-C ends the demo, not the agents)"
    )
    return len(TASKS)


async def watch(
    engine: Engine,
    actor: Actor,
    repo: Path,
    count: int,
    out: Callable[[str], None],
    limit_s: float,
) -> dict[str, str]:
    conductor = engine.conductor
    deadline = time.monotonic() + limit_s
    final: dict[str, str] = {}
    while time.monotonic() < deadline:
        tasks = [t for t in await conductor.registry(actor).query(limit=100)
                 if t.repository == str(repo)]  # fmt: skip
        for t in tasks:
            if t.status is TaskStatus.READY:
                with contextlib.suppress(FleetError):
                    await conductor.merge(actor, str(t.id))
        queued = await conductor.governor.queue(actor.tenant)
        final = {t.description: t.status.value for t in tasks}
        settled = {TaskStatus.MERGED, TaskStatus.ABANDONED, TaskStatus.CANCELLED}
        if not queued and len(tasks) == count and all(t.status in settled for t in tasks):
            break
        await asyncio.sleep(0.5)
    out("fleet demo: done" if time.monotonic() < deadline else "fleet demo: time is up")
    for description, status in final.items():
        out(f"  {status:<10} {description}")
    return final
