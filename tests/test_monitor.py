"""The lifecycle running by itself: the monitor, the local forge, retries, merge, reconcile.
Real PostgreSQL, git, tmux, the demo agent and the demo's sample repository (unittest CI)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import math
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from conftest import Pg, eventually, git, grant_repo
from fleet_core.audit import audit_trail
from fleet_core.cli.output import details_text
from fleet_core.conductor import Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import InvalidTransitionError, MergeRefusedError
from fleet_core.events import EventType, FleetEvent
from fleet_core.forge.github import GitHubForge
from fleet_core.forge.select import ForgeSet
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.monitor import FORGE_LOCK, CycleReport, Monitor, MonitorConfig
from lifecycle_support import ACTOR, FAST, conductors, spawn, until

HERE = Path(__file__).parent
THIS_HOST = 3  # agents of this host beside the other host's tasks in the flat-calls test


@pytest.fixture
async def repo(repo: Path, db: Database) -> Path:
    """The sample repository, granted to alice (a spawn names a granted repository)."""
    await grant_repo(db, repo, "alice")
    return repo


def settings_for(tmp_path: Path, **kw: Any) -> Settings:
    fields: dict[str, Any] = {
        "data_dir": tmp_path / "data",
        "host_id": "test-host",
        "secrets": {"FLEET_DEMO_DELAY": "0"},
        "kill_grace_seconds": 0.5,
        "retry_base_seconds": 0.05,
        "retry_max_seconds": 0.2,
    }
    fields.update(kw)
    return Settings(**fields)


@pytest.fixture
async def engine(tmp_path: Path, db: Database) -> AsyncIterator[Callable[..., Any]]:
    async with conductors(db) as make:

        def build(config: MonitorConfig = FAST, **kw: Any) -> tuple[Conductor, Monitor]:
            return make(settings_for(tmp_path, **kw), config)

        yield build


def status_is(*statuses: TaskStatus) -> Callable[[TaskRecord], bool]:
    return lambda rec: rec.status in statuses


async def test_local_forge_end_to_end(engine, sample: Path, db: Database) -> None:
    c, m = engine()
    rec = await spawn(c, sample, "Add a multiply function")
    pr = await until(c, m, rec.id, status_is(TaskStatus.PR_CREATED, TaskStatus.READY))
    assert pr.pr_number == 1
    ready = await until(c, m, rec.id, status_is(TaskStatus.READY))
    assert ready.ci_status.value == "passing"
    assert (ready.review_status or {})["verdict"] == "approved"  # the demo reviewers
    merged = await c.merge(ACTOR, str(rec.id))
    assert merged.status is TaskStatus.MERGED
    remote = sample.parent / "sample.git"
    assert f"fleet-demo/{rec.id}.md" in git(remote, "ls-tree", "-r", "--name-only", "main")
    trail = [a["event_type"] for a in await audit_trail(db, Tenant.operator("alice"), rec.id)]
    assert trail[-1] == "fleet.completed"
    assert not Path(rec.worktree_path or "/nonexistent").exists()


async def test_a_pr_merged_before_its_task_moved_completes_the_task(engine, sample: Path) -> None:
    """An engine that died between the forge's merge and the task's move: the next `merge`
    completes the task (and answers it again, never a conflict), and so does the next cycle."""
    c, m = engine()
    first = await spawn(c, sample, "Add a multiply function")
    second = await spawn(c, sample, "Add a subtract function")
    ready = [await until(c, m, t.id, status_is(TaskStatus.READY)) for t in (first, second)]
    for rec in ready:  # the forge merged; the rows did not move
        assert rec.pr_number is not None
        assert (await c.forges.local.merge(sample, rec.pr_number)).merged
    merged = await c.merge(ACTOR, str(first.id))
    assert merged.status is TaskStatus.MERGED
    again = await c.merge(ACTOR, str(first.id)[:8])
    assert (again.status, again.version) == (TaskStatus.MERGED, merged.version)
    done = await until(c, m, second.id, status_is(TaskStatus.MERGED))
    assert done.completed_at is not None
    assert not Path(done.worktree_path or "/nonexistent").exists()


async def test_a_row_moved_while_the_forge_merged_is_moved_again(
    engine, sample: Path, pg: Pg
) -> None:
    """The task's version moves between the merge's read and its move (here: a post-merge
    hook of the remote updates the row, as a monitor cycle would): the merge still completes."""
    c, m = engine()
    rec = await spawn(c, sample, "Add a multiply function")
    ready = await until(c, m, rec.id, status_is(TaskStatus.READY))
    hook = sample.parent / "sample.git" / "hooks" / "post-merge"
    hook.parent.mkdir(exist_ok=True)
    hook.write_text(
        f"#!{sys.executable}\n"
        "import asyncio, asyncpg\n"
        "async def bump():\n"
        f"    conn = await asyncpg.connect({pg.superuser_dsn!r})\n"
        "    await conn.execute('UPDATE fleet_tasks SET version = version + 1 WHERE id = $1',\n"
        f"                       {str(rec.id)!r})\n"
        "    await conn.close()\n"
        "asyncio.run(bump())\n"
    )
    hook.chmod(0o755)
    merged = await c.merge(ACTOR, str(rec.id))
    assert merged.status is TaskStatus.MERGED
    assert merged.version == ready.version + 2  # the hook's update, then the move
    remote = sample.parent / "sample.git"
    assert f"fleet-demo/{rec.id}.md" in git(remote, "ls-tree", "-r", "--name-only", "main")


async def test_ci_failure_is_retried_with_the_failing_test_in_the_prompt(
    engine, sample: Path
) -> None:
    c, m = engine()
    rec = await spawn(c, sample, "Fix divide [demo:ci-fail-once]", max_retries=2)
    failed: list[TaskRecord] = []  # `failed` lasts only until the retry's short backoff

    def seen(r: TaskRecord) -> bool:
        if r.status is TaskStatus.FAILED:
            failed.append(r)
        return r.status is TaskStatus.READY

    ready = await until(c, m, rec.id, seen)
    ctx = ready.failure_context or {}
    assert [a["reason"] for a in ctx["attempts"]] == ["ci_failed"]
    assert ctx["failing_checks"] == ["ci"] and "test_no_broken_change" in ctx["ci_log"]
    assert "fleet-demo/CI_FAIL" in ctx["diff"]  # what the attempt changed, for the retry
    assert ready.retry_count == 1 and ready.pr_number is not None
    assert all(f.pr_number == ready.pr_number for f in failed)
    # The second attempt's prompt (the demo agent pushes what it received) carried the failure.
    prompt = git(sample.parent / "sample.git", "show", f"{rec.branch}:fleet-demo/{rec.id}.md")
    assert "Previous attempt failed" in prompt and "test_no_broken_change" in prompt
    assert "## Previous diff" in prompt and "CI_FAIL" in prompt
    assert ready.prompt_hash != rec.prompt_hash


async def test_hang_times_out_is_retried_then_abandoned(engine, sample: Path) -> None:
    c, m = engine()
    # Judged by where it ends: `failed` lasts only until the retry's short backoff, which a
    # loaded machine's cycle can outlast (the test once saw only `abandoned`).
    rec = await spawn(c, sample, "Refactor [demo:hang]", max_retries=1)
    gone = await until(c, m, rec.id, status_is(TaskStatus.ABANDONED))
    ctx = gone.failure_context or {}
    assert [a["reason"] for a in ctx["attempts"]] == ["timeout", "timeout"]
    assert gone.retry_count == 1 and gone.completed_at is not None
    assert not await c.runtime.is_alive(rec.id)  # killed
    assert await c.runtime.tmux.pane(gone.tmux_session or "") is None


async def test_oom_is_retried_with_a_smaller_prompt_budget(engine, sample: Path) -> None:
    c, m = engine()
    rec = await spawn(c, sample, "Big numbers [demo:oom]", max_retries=1)
    gone = await until(c, m, rec.id, status_is(TaskStatus.ABANDONED))
    ctx = gone.failure_context or {}
    assert [a["reason"] for a in ctx["attempts"]] == ["oom", "oom"]
    assert (ctx["exit_code"], ctx["oom"], gone.retry_count) == (137, True, 1)
    assert ctx["prompt_budget"] == 6000  # 0.75 of the first attempt's 8000


async def test_usage_limit_pauses_without_spending_a_retry(engine, sample: Path) -> None:
    said = "Error: You have hit your usage limit. Try again in 1 seconds."
    command = [sys.executable, "-c", f"print({said!r}); raise SystemExit(1)"]
    c, m = engine(agents={"custom": {"command": command}})
    rec = await spawn(c, sample, "anything", agent_type="custom", model="m", max_retries=1)
    paused = await until(c, m, rec.id, status_is(TaskStatus.FAILED))
    ctx = paused.failure_context or {}
    assert ctx["reason"] == "usage_limit" and "resume_at" in ctx
    assert c.retries.due_at(paused) > paused.updated_at  # waits for the stated reset
    again = await until(
        c, m, rec.id, lambda r: r.status is TaskStatus.FAILED and r.version > paused.version + 2
    )
    assert again.retry_count == 0  # the pause spent no retry


async def test_verbs_refuse_what_the_rules_forbid(engine, sample: Path) -> None:
    c, _m = engine()
    rec = await spawn(c, sample, "wait [demo:hang]")
    with pytest.raises(MergeRefusedError, match="only a ready task"):
        await c.merge(ACTOR, str(rec.id))
    with pytest.raises(InvalidTransitionError):
        await c.retry(ACTOR, str(rec.id))
    done = await c.stop(ACTOR, str(rec.id))
    with pytest.raises(InvalidTransitionError):  # cancelled is never retried
        await c.retry(ACTOR, str(rec.id))
    assert await c.retries.run_due([done]) == 0


async def test_manual_retry_goes_at_once(engine, sample: Path) -> None:
    c, m = engine(retry_base_seconds=3600, retry_max_seconds=3600)
    rec = await spawn(c, sample, "give up [demo:fail]", max_retries=1)
    failed = await until(c, m, rec.id, status_is(TaskStatus.FAILED))
    assert (failed.failure_context or {})["exit_code"] == 1
    assert await c.retries.run_due([failed]) == 0  # an hour to wait
    running = await c.retry(ACTOR, str(rec.id)[:8])
    assert running.status is TaskStatus.RUNNING and running.retry_count == 1


async def test_liveness_goes_on_without_gh(engine, tmp_path: Path, sample: Path) -> None:
    """A repository on GitHub while `gh` is missing: PR checks are off, liveness is not."""
    git(sample, "remote", "set-url", "origin", "https://github.com/acme/widgets.git")
    c, m = engine(repos={str(sample): {"forge": "github"}})
    no_gh = {**os.environ, "PATH": "/nonexistent"}
    c.forges = ForgeSet(tmp_path / "forge", repos=c.repos, github=GitHubForge(env=no_gh))
    rec = await spawn(c, sample, "push to nowhere")  # the engine's push fails: no network
    for _ in range(200):
        report = await m.cycle()
        assert report is not None
        now = await c.registry(ACTOR).get(rec.id)
        if now.status is TaskStatus.FAILED:
            break
        await asyncio.sleep(0.05)
    ctx = now.failure_context or {}
    assert now.status is TaskStatus.FAILED and ctx["exit_code"] == 0
    assert ctx["reason"] == "push_failed" and "github.com" in ctx["push_error"]
    assert "gh is not installed" in m.health()["forges"]["github"]["health"]


@pytest.mark.parametrize("n", [10, 100, 500])
async def test_github_calls_per_cycle_stay_flat(
    engine, tmp_path: Path, su: asyncpg.Connection, sample: Path, n: int
) -> None:
    """n tasks of another host plus agents of this host: the gh calls per cycle stay flat
    while this host's per-task work (push, liveness) runs for its own agents."""
    bare = tmp_path / "github.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(sample), str(bare)], check=True)
    url = "https://github.com/acme/widgets.git"
    git(sample, "remote", "set-url", "origin", url)
    git(sample, "config", f"url.{bare}.pushInsteadOf", url)
    world, log = tmp_path / "world.json", tmp_path / "gh.log"
    prs = [{"number": i + 1, "branch": f"fleet/t-{i}", "base": "main", "state": "OPEN",
            "checks": [{"name": "test", "status": "IN_PROGRESS", "conclusion": None}]}
           for i in range(0, n, 2)]  # fmt: skip
    world.write_text(json.dumps({
        "repo": "acme/widgets", "logged_in": True, "prs": prs, "comments": [],
        "rate_limit": {"remaining": 5000, "limit": 5000, "reset_at": "2030-01-01T00:00:00Z"},
    }))  # fmt: skip
    env = {**os.environ, "PATH": f"{HERE / 'fake_gh'}:{os.environ['PATH']}",
           "FAKE_GH_STATE": str(world), "FAKE_GH_LOG": str(log)}  # fmt: skip
    c, m = engine(repos={str(sample): {"forge": "github"}}, config=MonitorConfig(deadline_s=60))
    c.forges = ForgeSet(tmp_path / "forge", repos=c.repos, github=GitHubForge(env=env))
    # Agents of this host, still at work (spawned first: the rows below count against the
    # global cap); one of them already has a PR for its branch (a PR counts once the agent
    # has ended, so it stays running).
    mine = [await spawn(c, sample, f"wait {k} [demo:hang]") for k in range(THIS_HOST)]
    # n live tasks of bob's on another host (no tmux here): half running without a PR, half
    # with one.
    for i in range(n):
        with_pr = i % 2 == 1
        await su.execute(
            "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description,"
            " branch, repository, status, pr_number, host_id, spawned_at)"
            " VALUES ('bob','demo','demo','docs','d',$1,$2,$3,$4,'other-host', now())",
            f"fleet/t-{i}", str(sample), "pr_created" if with_pr else "running",
            i if with_pr else None,
        )  # fmt: skip
    doc = json.loads(world.read_text())
    doc["prs"].append({"number": n + 1, "branch": mine[0].branch, "base": "main",
                       "state": "OPEN", "checks": []})  # fmt: skip
    world.write_text(json.dumps(doc))
    for _ in range(3):
        before = len(log.read_text().splitlines()) if log.exists() else 0
        report = await m.cycle()
        assert report is not None and report.errors == []
        calls = len(log.read_text().splitlines()) - before
        assert calls <= math.ceil((n + THIS_HOST) / 50) + 1, calls
    assert report.checked == n + THIS_HOST
    for rec in mine:  # judged alive, and published by the engine
        assert (await c.registry(ACTOR).get(rec.id)).status is TaskStatus.RUNNING
        assert git(bare, "rev-parse", "--verify", rec.branch).strip()


async def test_reconcile_after_the_engine_is_killed(
    engine, sample: Path, pg: Pg, tmp_path: Path, su: asyncpg.Connection
) -> None:
    """An engine process spawns two agents and is SIGKILLed; one agent dies too. The next
    engine fails only that task, and keeps monitoring the live one."""
    doc = {"data_dir": str(tmp_path / "data"), "dsn": pg.engine_dsn, "repo": str(sample)}
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "engine_worker.py"), json.dumps(doc)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    ids = json.loads(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=10)
    c, m = engine()
    dead, alive = ids
    await c.runtime.tmux.kill_session(f"fleet-{dead}")
    untracked = "00000000-0000-4000-8000-000000000000"
    subprocess.run(["tmux", "-L", c.runtime.paths.tmux_socket, "new-session", "-d", "-s",
                    f"fleet-{untracked}", "sleep", "30"], check=True)  # fmt: skip
    report = await m.reconcile()
    assert [str(t) for t in report.orphaned] == [dead]
    assert [str(t) for t in report.untracked] == [untracked]
    failed = await c.registry(ACTOR).get(dead)
    assert failed.status is TaskStatus.FAILED
    assert (failed.failure_context or {})["reason"] == "conductor_restart"
    assert (failed.failure_context or {})["previous_status"] == "running"
    cycle = await m.cycle()
    assert cycle is not None and cycle.errors == []
    live = await c.registry(ACTOR).get(alive)
    assert live.status is TaskStatus.RUNNING and await c.runtime.is_alive(live.id)
    assert await c.runtime.tmux.pane(f"fleet-{untracked}") is not None  # never killed


async def test_overlapping_cycles_are_skipped(engine) -> None:
    _c, m = engine()
    first = asyncio.create_task(m.cycle())
    await asyncio.sleep(0)
    assert await m.cycle() is None and m.skipped == 1
    assert (await first) is not None and m.health()["cycles"] == 1


async def test_a_stalled_agent_is_reported_once(engine, sample: Path) -> None:
    c, m = engine(config=MonitorConfig(interval_s=0.1, stall_s=0.5))
    seen: list[FleetEvent] = []
    c.bus.subscribe(EventType.STALLED, seen.append)
    await asyncio.sleep(0.7)  # the base commit is older than stall_s: it does not count
    rec = await spawn(c, sample, "think forever [demo:stall]")

    async def cycle() -> list[FleetEvent]:
        report = await m.cycle()
        assert report is not None and report.errors == []
        return seen

    assert await cycle() == []  # counted from the agent's start, not the base commit
    await eventually(cycle)  # no commit since the agent started, longer than stall_s
    for _ in range(3):
        await cycle()
    assert [e.task_id for e in seen] == [rec.id]
    now = await c.registry(ACTOR).get(rec.id)
    assert now.status is TaskStatus.RUNNING  # a warning only
    warning = now.stall_warning or {}
    assert warning["since"] == (now.spawned_at or now.created_at).isoformat()  # not the base
    assert "no new commit for" in details_text(now)
    await c.stop(ACTOR, str(rec.id))
    await cycle()
    assert rec.id not in m.stalls.warned  # what the monitor keeps per task ends with the task


async def test_two_engines_never_act_twice(engine, sample: Path) -> None:
    (c1, m1), (c2, m2) = engine(), engine()
    moves: list[tuple[str, str]] = []
    for c in (c1, c2):
        c.bus.subscribe(
            EventType.STATUS_CHANGED, lambda e: moves.append((e.data["from"], e.data["to"]))
        )
    rec = await spawn(c1, sample, "Add a multiply function")
    for _ in range(100):
        await asyncio.gather(m1.cycle(), m2.cycle())
        await c1.forges.local.wait_idle()
        await c2.forges.local.wait_idle()
        if (await c1.registry(ACTOR).get(rec.id)).status is TaskStatus.READY:
            break
        await asyncio.sleep(0.05)
    assert moves == [
        ("proposed", "spawning"), ("spawning", "running"), ("running", "pr_created"),
        ("pr_created", "reviewing"), ("reviewing", "ready"),
    ]  # fmt: skip


async def test_the_engine_opens_the_github_pr_of_an_agent_that_ended_well(
    engine, tmp_path: Path, sample: Path
) -> None:
    """The agent commits; the engine pushes (here to a local bare repository standing in for
    GitHub, through pushInsteadOf) and opens the PR with `gh pr create` (the fake gh)."""
    bare = tmp_path / "github.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(sample), str(bare)], check=True)
    url = "https://github.com/acme/widgets.git"
    git(sample, "remote", "set-url", "origin", url)
    git(sample, "config", f"url.{bare}.pushInsteadOf", url)
    fake = Path(__file__).parent / "fake_gh"
    world = tmp_path / "world.json"
    world.write_text(json.dumps({"repo": "acme/widgets", "logged_in": True, "prs": []}))
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}",
           "FAKE_GH_STATE": str(world), "FAKE_GH_LOG": str(tmp_path / "gh.log")}  # fmt: skip
    c, m = engine(repos={str(sample): {"forge": "github"}})
    c.forges = ForgeSet(tmp_path / "forge", repos=c.repos, github=GitHubForge(env=env))
    rec = await spawn(c, sample, "Add a divide function\n\nwith a test")
    done = await until(c, m, rec.id, lambda r: r.status is not TaskStatus.RUNNING)
    assert done.status is TaskStatus.PR_CREATED, done.failure_context
    prs = json.loads(world.read_text())["prs"]
    assert [(p["number"], p["branch"], p["base"], p["title"]) for p in prs] == [
        (done.pr_number, rec.branch, "main", "Add a divide function")
    ]
    assert str(rec.id) in prs[0]["body"]
    assert git(bare, "rev-parse", rec.branch).strip()  # the engine pushed it
    calls = (tmp_path / "gh.log").read_text()
    assert '"pr", "create"' in calls


FORGE_LOCK_HELD = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2"
    " AND objsubid = 2"
)


def gh_world(tmp_path: Path, prs: list[dict[str, Any]]) -> tuple[Path, dict[str, str]]:
    """A GitHub repository answered by the fake `gh`; returns the repo and gh's environment."""
    repo = tmp_path / "gh-repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    git(repo, "remote", "add", "origin", "https://github.com/acme/widgets.git")
    world = tmp_path / "world.json"
    world.write_text(json.dumps({
        "repo": "acme/widgets", "logged_in": True, "prs": prs, "comments": [],
        "rate_limit": {"remaining": 5000, "limit": 5000, "reset_at": "2030-01-01T00:00:00Z"},
    }))  # fmt: skip
    env = {"PATH": f"{HERE / 'fake_gh'}:{os.environ['PATH']}", "FAKE_GH_STATE": str(world),
           "FAKE_GH_LOG": str(tmp_path / "gh.log")}  # fmt: skip
    return repo, env


async def running_row(su: asyncpg.Connection, repo: Path, branch: str) -> Any:
    return await su.fetchval(
        "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description,"
        " branch, repository, status, host_id, spawned_at)"
        " VALUES ('alice','demo','demo','docs','d',$1,$2,'running','other-host', now())"
        " RETURNING id",
        branch, str(repo),
    )  # fmt: skip


async def test_a_forge_poll_cancelled_anywhere_leaves_no_forge_lock(
    engine, tmp_path: Path, su: asyncpg.Connection
) -> None:
    """The cycle's deadline or the engine's stop can cancel the forge poll at any await: the
    lock must end with the poll wherever that happens (a session lock left on a pooled
    connection would stop every engine from polling)."""
    repo, env = gh_world(tmp_path, [])
    c, m = engine(repos={str(repo): {"forge": "github"}})
    c.forges = ForgeSet(
        tmp_path / "forge", repos=c.repos, github=GitHubForge(env={**os.environ, **env})
    )
    await running_row(su, repo, "fleet/t-0")
    tasks = await m.admin.list_live()
    for k in range(120):
        poll = asyncio.create_task(m._poll_forges(tasks, CycleReport()))
        for _ in range(k):
            await asyncio.sleep(0)
        poll.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await poll

        async def free() -> bool:
            return await su.fetchval(FORGE_LOCK_HELD, *FORGE_LOCK) == 0

        await eventually(free, timeout=10)


async def test_an_engine_killed_while_polling_the_forge_does_not_keep_the_lock(
    engine, tmp_path: Path, su: asyncpg.Connection, pg: Pg
) -> None:
    """An engine process holds the forge lock (its `gh` call is blocked) and is SIGKILLed:
    another engine then takes the lock and polls (its task gets its PR)."""
    pr = {"number": 7, "branch": "fleet/t-0", "base": "main", "state": "OPEN", "checks": []}
    repo, env = gh_world(tmp_path, [pr])
    tid = await running_row(su, repo, "fleet/t-0")
    doc = {"data_dir": str(tmp_path / "worker"), "dsn": pg.engine_dsn, "repo": str(repo)}
    c, m = engine(repos={str(repo): {"forge": "github"}})
    c.forges = ForgeSet(
        tmp_path / "forge", repos=c.repos, github=GitHubForge(env={**os.environ, **env})
    )

    async def held() -> bool:
        return await su.fetchval(FORGE_LOCK_HELD, *FORGE_LOCK) == 1

    with open(env["FAKE_GH_STATE"] + ".lock", "a") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)  # the fake gh waits for this lock: the poll hangs
        with open(tmp_path / "worker.err", "w") as err:
            proc = subprocess.Popen(
                [sys.executable, str(HERE / "forge_lock_worker.py"), json.dumps(doc)],
                stdout=subprocess.PIPE, stderr=err, text=True, env={**os.environ, **env},
            )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
            await eventually(held)
            busy = await m._poll_forges(await m.admin.list_live(), CycleReport())
            assert busy == ({}, {}, set())  # the worker holds the lock: no second poll
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
    rec = await until(c, m, tid, status_is(TaskStatus.PR_CREATED), limit=30)
    assert rec.pr_number == 7


async def test_a_failure_context_without_its_log_tail_says_why_in_the_log(
    engine, sample: Path, su: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    """A running task of this host whose agent session is gone: it fails, and the log tail
    that could not be read is reported in the log rather than dropped silently."""
    c, m = engine()
    tid = await su.fetchval(
        "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description,"
        " branch, repository, status, host_id, spawned_at)"
        " VALUES ('alice','demo','demo','docs','d','fleet/gone',$1,'running','test-host', now())"
        " RETURNING id",
        str(sample),
    )  # fmt: skip
    caplog.set_level(logging.INFO, logger="fleet_core.monitor")
    rec = await until(c, m, tid, status_is(TaskStatus.FAILED))
    assert (rec.failure_context or {})["reason"] == "agent_exited"
    assert "log_tail" not in (rec.failure_context or {})
    missing = [r for r in caplog.records if r.getMessage().startswith("no log tail")]
    assert missing and all(getattr(r, "task", None) == str(tid) for r in missing)


STUBBORN = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
            "signal.SIG_IGN); print('ignoring SIGTERM', flush=True); time.sleep(3600)"]  # fmt: skip


async def test_a_timeout_kill_runs_outside_the_cycle_deadline(engine, sample: Path) -> None:
    """An agent that ignores SIGTERM times out: its kill needs the whole grace (longer than a
    cycle's deadline) and then SIGKILL. Cycles go on within their deadline meanwhile; the
    task fails with reason `timeout` and the log tail read before the kill."""
    config = MonitorConfig(interval_s=0.1, deadline_s=3.0, minute_s=0.3)  # timeout: 1.5 s
    c, m = engine(config=config, kill_grace_seconds=6.0,
                  agents={"custom": {"command": STUBBORN}})  # fmt: skip
    rec = await spawn(c, sample, "ignore me", agent_type="custom")
    failed = await until(c, m, rec.id, status_is(TaskStatus.FAILED))  # no cycle errors
    ctx = failed.failure_context or {}
    assert ctx["reason"] == "timeout" and "ignoring SIGTERM" in ctx["log_tail"]
    assert not await c.runtime.is_alive(rec.id)
    assert m.health()["errors"] == 0
