"""What a monitor cycle costs per running task stays flat: a checkout's branch is read again
only when its ref moved, a commit's time once; real git, tmux, PostgreSQL and the demo agent."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import eventually, git, grant_repo
from fleet_core.conductor import Actor
from fleet_core.config import Settings
from fleet_core.db.database import Database
from fleet_core.demo import make_sample
from fleet_core.events import EventType, FleetEvent
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import AgentType, SpawnRequest, Tier
from fleet_core.monitor import MonitorConfig
from fleet_core.progress import ProcTable, ProgressWatch, tree_cpu_seconds
from fleet_core.runtime.agent_profiles import profile_for
from fleet_core.runtime.heads import BranchHeads
from lifecycle_support import base_fields, conductors

ACTOR = Actor("alice", Tier.SOVEREIGN)
AS_ROOT = ["-c", "safe.directory=*", "-c", "user.name=t", "-c", "user.email=t@x"]


def commit(checkout: Path, message: str) -> str:
    subprocess.run(["git", *AS_ROOT, "-C", str(checkout), "commit", "-q", "--allow-empty",
                    "-m", message], check=True)  # fmt: skip
    return git(checkout, "-c", "safe.directory=*", "rev-parse", "HEAD").strip()


async def test_a_branch_tip_is_read_again_only_when_its_ref_moved(tmp_path: Path) -> None:
    origin = make_sample(tmp_path / "demo")
    checkout = tmp_path / "checkout"
    subprocess.run(["git", "clone", "-q", "--shared", str(origin), str(checkout)], check=True)
    subprocess.run(["git", "-C", str(checkout), "checkout", "-q", "-b", "fleet/x"], check=True)
    heads, tid = BranchHeads(tmp_path / "data"), uuid.uuid4()
    base = git(checkout, "rev-parse", "HEAD").strip()
    assert await heads.head(tid, checkout, "fleet/x") == base and heads.reads == 1
    for _ in range(3):
        assert await heads.head(tid, checkout, "fleet/x") == base
    assert heads.reads == 1  # nothing moved: no git
    first = await heads.last_commit(tid, checkout, "fleet/x")
    assert first is not None and first[0] == base and isinstance(first[1], int)
    assert await heads.last_commit(tid, checkout, "fleet/x") == first and heads.reads == 2
    new = commit(checkout, "work")
    assert await heads.head(tid, checkout, "fleet/x") == new and heads.reads == 3
    # Packed (the loose file goes), then moved back by a loose ref: both are seen.
    subprocess.run(["git", "-C", str(checkout), "pack-refs", "--all"], check=True)
    assert await heads.head(tid, checkout, "fleet/x") == new and heads.reads == 4
    subprocess.run(["git", "-C", str(checkout), "update-ref", "refs/heads/fleet/x", base],
                   check=True)  # fmt: skip
    assert await heads.head(tid, checkout, "fleet/x") == base
    assert await heads.head(tid, checkout, "fleet/y") is None  # no such branch
    heads.keep_only(set())
    assert await heads.head(tid, checkout, "fleet/x") == base and heads.reads == 7


def test_one_read_of_proc_sums_each_process_tree() -> None:
    child = subprocess.Popen(["sh", "-c", "sleep 30 & wait"])
    try:
        for _ in range(400):  # until the shell has started its sleep
            table = ProcTable.read()
            if table.children.get(child.pid):
                break
            time.sleep(0.01)
        assert table.children.get(child.pid), "the shell's sleep is its child"
        assert child.pid in table.cpu
        assert table.tree_cpu(child.pid) == pytest.approx(tree_cpu_seconds(child.pid), abs=0.05)
        assert table.tree_cpu(999_999_999) == 0.0
    finally:
        child.kill()
        child.wait()


@pytest.fixture
async def engine(tmp_path: Path, db: Database) -> AsyncIterator[Callable[..., Any]]:
    async with conductors(db) as make:
        yield lambda config: make(Settings(**base_fields(tmp_path)), config)


async def test_old_running_agents_cost_no_git_per_cycle_until_they_commit(
    engine, tmp_path: Path, db: Database
) -> None:
    """Agents past stall_s: after the first look, cycles run no git for them (publishing
    and the stall check read the branch only when its ref moved); a new commit is seen,
    pushed, and counts for the stall check at the next cycle."""
    sample = make_sample(tmp_path / "demo")
    await grant_repo(db, sample, "alice")
    c, m = engine(MonitorConfig(interval_s=300, stall_s=0.5))
    stalled: list[FleetEvent] = []
    c.bus.subscribe(EventType.STALLED, stalled.append)
    recs = []
    for k in range(3):
        request = SpawnRequest.model_validate({
            "description": f"think {k} [demo:stall]", "repository": str(sample),
            "task_type": "feature", "agent_type": "demo", "timeout_minutes": 5,
        })  # fmt: skip
        out = await c.spawn(ACTOR, request)
        assert out.task is not None
        recs.append(out.task)

    async def all_warned() -> bool:
        report = await m.cycle()
        assert report is not None and report.errors == []
        return {e.task_id for e in stalled} == {r.id for r in recs}

    await eventually(all_warned)
    reads = c.runtime.heads.reads
    for _ in range(3):
        report = await m.cycle()
        assert report is not None and report.errors == [] and report.stalls == 0
    assert c.runtime.heads.reads == reads  # three cycles, three old agents: no git for them
    checkout = Path(recs[0].worktree_path or "")
    sha = commit(checkout, "progress at last")
    report = await m.cycle()
    assert report is not None and report.errors == []
    assert c.runtime.heads.reads == reads + 2  # its tip, and that commit's time
    remote = sample.parent / "sample.git"
    assert git(remote, "rev-parse", recs[0].branch).strip() == sha  # published

    async def warned_about_the_new_commit() -> bool:
        report = await m.cycle()
        assert report is not None and report.errors == []
        return any(e.task_id == recs[0].id and e.data.get("commit") == sha for e in stalled)

    await eventually(warned_about_the_new_commit)  # its stall counts from that commit
    for rec in recs:
        assert (await c.registry(ACTOR).get(rec.id)).status is TaskStatus.RUNNING


async def test_a_checkout_is_walked_at_most_every_fingerprint_interval(tmp_path: Path) -> None:
    """A silent agent's checkout is the one look whose cost grows with its work: it is taken
    at most every `fingerprint_every_s` (a change is then seen that much later, never lost)."""
    now = [100.0]
    watch = ProgressWatch(tmp_path, clock=lambda: now[0], fingerprint_every_s=10.0)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "a.txt").write_text("one")
    look = {"log_path": tmp_path / "none.log", "pane_pid": None, "checkout": checkout,
            "profile": profile_for(AgentType.DEMO)}  # fmt: skip
    tid = uuid.uuid4()
    assert await watch.idle_for(tid, **look) == 0.0
    (checkout / "b.txt").write_text("two")  # progress, in the checkout only
    now[0] = 104.0
    assert await watch.idle_for(tid, **look) == 4.0  # not walked yet: 4 s < 10 s
    now[0] = 111.0
    assert await watch.idle_for(tid, **look) == 0.0  # walked: the change is seen
    now[0] = 125.0
    assert await watch.idle_for(tid, **look) == 14.0  # walked again, nothing changed
    every = ProgressWatch(tmp_path, clock=lambda: now[0])  # the default: every look
    assert await every.idle_for(tid, **look) == 0.0
    (checkout / "c.txt").write_text("three")
    now[0] = 126.0
    assert await every.idle_for(tid, **look) == 0.0
