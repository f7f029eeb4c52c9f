"""Housekeeping: `fleet pause`/`resume` hold admissions, retries and queued spawns fleet-wide;
`fleet gc` removes what ended tasks left once it is old; `fleet demo` touches only its own."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from conftest import fleet, git, new_task
from fleet_core import pause
from fleet_core.conductor import Actor, Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.demo import others_on_sample, remove_earlier
from fleet_core.errors import SpawnDeniedError
from fleet_core.gc import Collector, parse_age
from fleet_core.governor import Admitted, Governor
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import Tier
from fleet_core.registry import TaskRegistry
from fleet_core.spawn_queue import Queued

ARCHITECT = Tier.ARCHITECT
DAY = 86400.0


# -- pause / resume ------------------------------------------------------------------------------


async def test_a_paused_fleet_admits_nothing_and_resumes(db: Database) -> None:
    gov = Governor(db)
    reg = TaskRegistry(db, Tenant.operator("alice"))
    failed = await reg.create(new_task(branch="fleet/failed"))
    for step in (TaskStatus.SPAWNING, TaskStatus.FAILED):
        failed = await reg.transition(failed.id, step, expected_version=failed.version)

    now, fresh = await pause.pause(db, "root", "upgrading the host")
    assert fresh and now.by == "root" and now.reason == "upgrading the host"
    assert (await pause.pause(db, "root"))[1] is False  # already paused: unchanged
    with pytest.raises(SpawnDeniedError) as denied:
        await gov.admit(new_task(branch="fleet/a"), operator_id="alice", tier=ARCHITECT)
    assert denied.value.reason == "paused" and "fleet resume" in denied.value.hint
    queued = await gov.admit(
        new_task(branch="fleet/b"), operator_id="alice", tier=ARCHITECT, queue=True
    )
    assert isinstance(queued, Queued)
    assert await gov.take_queued("alice", lambda e: new_task(branch="fleet/b")) is None
    with pytest.raises(SpawnDeniedError, match="paused"):  # a retry waits too
        await gov.readmit(failed, tier=ARCHITECT, count_failure=True, update={})
    assert (await reg.get(failed.id)).status is TaskStatus.FAILED

    was = await pause.resume(db, "root")
    assert was is not None and was.reason == "upgrading the host"
    assert await pause.resume(db, "root") is None
    taken = await gov.take_queued("alice", lambda e: new_task(branch="fleet/b"))
    assert taken is not None and taken[1].status is TaskStatus.PROPOSED
    assert isinstance(
        await gov.admit(new_task(branch="fleet/c"), operator_id="alice", tier=ARCHITECT), Admitted
    )


async def test_only_an_admin_flips_the_switch(db: Database, pg: Any) -> None:
    conn = await asyncpg.connect(pg.engine_dsn)
    try:
        async with conn.transaction():
            await conn.execute("SELECT set_config('app.operator_id', 'bob', true)")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(
                    "INSERT INTO fleet_switches (name, set_by) VALUES ('paused', 'bob')"
                )
    finally:
        await conn.close()
    denied = fleet("pause", FLEET_TIER="builder")
    assert denied.returncode == 4 and "pausing the fleet needs tier sovereign" in denied.stderr
    assert await pause.current(db) is None


async def test_pause_shows_in_status_and_resume_lifts_it(db: Database) -> None:
    paused = fleet("pause", "--reason", "disk full")
    assert paused.returncode == 0, paused.stderr
    assert paused.stdout.startswith("fleet paused by alice since ")
    assert "disk full" in paused.stdout and "running agents continue" in paused.stdout
    status = fleet("status")
    assert status.stdout.startswith("PAUSED: fleet paused by alice since ")
    doc = json.loads(fleet("status", "--json").stdout)
    assert doc["paused"]["by"] == "alice" and doc["paused"]["reason"] == "disk full"
    resumed = fleet("resume")
    assert resumed.returncode == 0 and resumed.stdout.startswith("resumed (was paused by alice")
    assert "PAUSED" not in fleet("status").stdout
    assert json.loads(fleet("status", "--json").stdout)["paused"] is None
    assert fleet("resume").stdout == "the fleet was not paused\n"


# -- gc ------------------------------------------------------------------------------------------


def _age(path: Path, days: float) -> None:
    stamp = time.time() - days * DAY
    for p in [path, *(path.rglob("*") if path.is_dir() else [])]:
        os.utime(p, (stamp, stamp), follow_symlinks=False)


def test_ages_are_parsed_or_named() -> None:
    assert parse_age("14d").days == 14 and parse_age("12h").total_seconds() == 12 * 3600
    for bad in ("2w", "", "d", "-1d"):
        with pytest.raises(Exception, match="--older-than"):
            parse_age(bad)
    r = fleet("gc", "--older-than", "2w")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--older-than" in r.stderr


async def test_gc_removes_only_what_ended_long_ago(
    db: Database, su: asyncpg.Connection, tmp_path: Path, repo: Path
) -> None:
    settings = Settings(data_dir=tmp_path / "data", host_id="test-host")
    conductor = Conductor.from_settings(settings, db)
    reg = TaskRegistry(db, Tenant.operator("alice"))
    paths = conductor.runtime.paths

    async def task(branch: str, final: TaskStatus | None, days_ago: float) -> Any:
        rec = await reg.create(new_task(branch=branch, repository=str(repo), host_id="test-host"))
        if final is not None:
            for step in (TaskStatus.SPAWNING, TaskStatus.FAILED, final):
                rec = await reg.transition(rec.id, step, expected_version=rec.version)
        checkout = paths.worktrees / str(rec.id)
        subprocess.run(["git", "clone", "-q", "--shared", str(repo), str(checkout)], check=True)
        git(checkout, "checkout", "-q", "-b", branch)
        await su.execute("UPDATE fleet_tasks SET completed_at = now() - make_interval(days => $2),"
                         " worktree_path = $3 WHERE id = $1", rec.id, days_ago,
                         str(checkout))  # fmt: skip
        run = paths.runs / str(rec.id)
        run.mkdir(parents=True)
        (run / "exit").write_text("exit_code=0\n")
        return rec, checkout, run

    old, old_checkout, old_run = await task("fleet/old", TaskStatus.ABANDONED, 30)
    recent, recent_checkout, _ = await task("fleet/recent", TaskStatus.ABANDONED, 2)
    live, live_checkout, live_run = await task("fleet/live", None, 30)
    (old_checkout / "notes.txt").write_text("work nobody pushed\n")
    orphan = paths.worktrees / "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
    orphan.mkdir()
    old_snap = paths.snapshots / "old-snapshot"
    new_snap = paths.snapshots / "new-snapshot"
    for snap in (old_snap, new_snap):
        snap.mkdir(parents=True)
        (snap / "work.patch").write_text("x" * 1000)
    _age(old_snap, 20)
    ci = conductor.forges.local.state_dir / "0123456789abcdef" / "ci"
    ci.mkdir(parents=True)
    for sha, days in (("a" * 40, 20), ("b" * 40, 1)):
        (ci / f"{sha}.log").write_text("Ran 3 tests\n")
        (ci / f"{sha}.json").write_text("{}")
        _age(ci / f"{sha}.log", days)

    dry = await Collector(conductor, parse_age("14d"), dry_run=True).run()
    assert {(i.kind, i.path) for i in dry.removed} == {
        ("checkout", old_checkout), ("run directory", old_run), ("snapshot", old_snap),
        ("CI log", ci / f"{'a' * 40}.log"),
    }  # fmt: skip
    assert dry.summary().startswith("would free ")
    assert old_checkout.exists() and old_snap.exists() and (ci / f"{'a' * 40}.log").exists()

    done = await Collector(conductor, parse_age("14d"), dry_run=False).run()
    assert done.freed > 0 and done.summary().startswith("freed ")
    assert "1 checkout, " in done.summary() and "1 snapshot, " in done.summary()
    assert not old_checkout.exists() and not old_run.exists() and not old_snap.exists()
    assert not (ci / f"{'a' * 40}.log").exists() and not (ci / f"{'a' * 40}.json").exists()
    assert (await reg.get(old.id)).worktree_path is None
    # Its unpushed work was snapshotted first (a fresh snapshot, not collected).
    fresh = [p for p in paths.snapshots.iterdir() if p.name.startswith(str(old.id))]
    assert len(fresh) == 1
    # What is recent, live or nobody's stays.
    assert recent_checkout.exists() and live_checkout.exists() and live_run.exists()
    assert new_snap.exists() and (ci / f"{'b' * 40}.log").exists() and orphan.exists()
    assert (orphan, "no task has this checkout (left alone)") in done.kept
    assert recent.status is TaskStatus.ABANDONED and live.status is TaskStatus.PROPOSED
    await conductor.stop_engine()


async def test_gc_prunes_only_the_events_that_are_done_with(
    db: Database, su: asyncpg.Connection, tmp_path: Path
) -> None:
    conductor = Conductor.from_settings(Settings(data_dir=tmp_path / "data"), db)

    async def event(key: str, days: float, **done: bool) -> None:
        await su.execute(
            "INSERT INTO fleet_outbox (operator_id, event_type, payload, dedup_key, created_at,"
            " processed_at, published_at, dead_at) VALUES ('alice', 'task.merged', '{}', $1,"
            " now() - make_interval(days => $2),"
            " CASE WHEN $3 THEN now() END, CASE WHEN $4 THEN now() END,"
            " CASE WHEN $5 THEN now() END)",
            key, days, done.get("processed", False), done.get("published", False),
            done.get("dead", False),
        )  # fmt: skip

    await event("delivered-published", 30, processed=True, published=True)
    await event("delivered-too-old-for-nats", 30, processed=True)  # past the 168 h NATS takes
    await event("delivered-recent", 2, processed=True, published=True)
    await event("pending", 30)
    await event("dead-letter", 30, processed=True, dead=True)
    await event("a-channel-gave-up", 30, processed=True, published=True)
    await su.execute(
        "INSERT INTO fleet_notifications (operator_id, channel, payload, outbox_id, dead_at) "
        "SELECT 'alice', 'discord', '{}', id, now() FROM fleet_outbox "
        "WHERE dedup_key = 'a-channel-gave-up'"
    )
    await su.execute(
        "INSERT INTO fleet_notifications (operator_id, channel, payload, outbox_id, delivered) "
        "SELECT 'alice', 'discord', '{}', id, true FROM fleet_outbox "
        "WHERE dedup_key = 'delivered-published'"
    )
    # NATS keeping events for 60 days would still take the unpublished one: it stays.
    nats_60 = Collector(conductor, parse_age("14d"), dry_run=True, nats_max_age=timedelta(days=60))
    assert (await nats_60.run()).events == 1
    dry = await Collector(conductor, parse_age("14d"), dry_run=True).run()
    assert dry.events == 2 and "2 delivered events" in dry.summary()
    assert await su.fetchval("SELECT count(*) FROM fleet_outbox") == 6
    done = await Collector(conductor, parse_age("14d"), dry_run=False).run()
    assert done.events == 2 and done.to_dict()["events"] == 2
    left = {r["dedup_key"] for r in await su.fetch("SELECT dedup_key FROM fleet_outbox")}
    assert left == {"delivered-recent", "pending", "dead-letter", "a-channel-gave-up"}
    kinds = await su.fetch("SELECT dead_at IS NOT NULL AS dead FROM fleet_notifications")
    assert [r["dead"] for r in kinds] == [True]  # the delivered record went with its event
    await conductor.stop_engine()


# -- the demo touches only its own ---------------------------------------------------------------


async def test_demo_removes_only_its_own_tasks(db: Database, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data", host_id="test-host")
    conductor = Conductor.from_settings(settings, db)
    actor = Actor("alice", Tier.ARCHITECT)
    sample = settings.data_dir / "demo" / "sample"
    reg = TaskRegistry(db, Tenant.operator("alice"))

    async def ended(branch: str, **kw: Any) -> Any:
        rec = await reg.create(new_task(branch=branch, **{"repository": str(sample), **kw}))
        return await reg.transition(rec.id, TaskStatus.CANCELLED, expected_version=0)

    by_demo = await ended("fleet/demo-made", demo=True)
    by_hand = await ended("fleet/by-hand")
    elsewhere = await ended("fleet/elsewhere", repository="/srv/other", demo=True)
    assert [r.id for r in await others_on_sample(conductor, actor, sample)] == [by_hand.id]
    assert await remove_earlier(conductor, actor, sample) == 1
    assert await reg.find(by_demo.id) is None
    assert await reg.find(by_hand.id) is not None and await reg.find(elsewhere.id) is not None
    assert await remove_earlier(conductor, actor, sample, others=True) == 1  # agreed
    assert await reg.find(by_hand.id) is None and await reg.find(elsewhere.id) is not None
    await conductor.stop_engine()


async def test_demo_asks_before_touching_a_task_it_did_not_make(db: Database, pg: Any) -> None:
    sample = pg.settings.data_dir / "demo" / "sample"
    before = sample.stat().st_ino if sample.exists() else None  # an earlier demo's, maybe
    reg = TaskRegistry(db, Tenant.operator("alice"))
    mine = await reg.create(new_task(branch="fleet/by-hand", repository=str(sample)))
    result = subprocess.run(
        [sys.executable, "-m", "fleet_core", "demo", "--headless"],
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
        env={**os.environ, "FLEET_OPERATOR": "alice"},
    )  # fmt: skip
    assert result.returncode == 5 and result.stderr.count("\n") == 1, result.stderr
    assert f"{mine.short_id} (proposed)" in result.stderr and "fleet demo --yes" in result.stderr
    assert (await reg.get(mine.id)).status is TaskStatus.PROPOSED  # untouched
    assert (sample.stat().st_ino if sample.exists() else None) == before  # not recreated
