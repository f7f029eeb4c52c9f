"""Local runtime against real git (a bare "origin"), real tmux on a private socket, the real
launcher and the demo agent."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from conftest import eventually, git, origin_of
from fleet_core.db.database import Database
from fleet_core.errors import BadInputError, SpawnError
from fleet_core.models import AgentType
from fleet_core.runtime.adapters import build_adapters
from fleet_core.runtime.handles import SpawnSpec
from fleet_core.runtime.local import LocalRuntime
from fleet_core.runtime.paths import RuntimePaths
from fleet_core.runtime.secrets import SecretProvider
from fleet_core.runtime.validation import path_under, validate_branch


def make_runtime(tmp_path: Path, db: Database, **adapter_overrides) -> LocalRuntime:
    environ = {
        "FLEET_DEMO_DELAY": "0",
        "ANTHROPIC_API_KEY": "sk-ant-test",
        "OPENAI_API_KEY": "sk-oa",
    }
    return LocalRuntime(
        RuntimePaths.under(tmp_path / "data"),
        build_adapters(adapter_overrides),
        SecretProvider(db, environ=environ, local_operator="alice"),
        host_id="test-host",
        kill_grace_s=1.0,
    )


@pytest.fixture
async def rt(tmp_path: Path, db: Database) -> AsyncIterator[LocalRuntime]:
    runtime = make_runtime(tmp_path, db)
    try:
        yield runtime
    finally:
        await runtime.tmux.kill_server()


def spec(repo: Path, prompt: str = "add a file", **kw) -> SpawnSpec:
    tid = kw.pop("task_id", uuid.uuid4())
    fields = {
        "task_id": tid, "operator_id": "alice", "repository": repo,
        "branch": f"fleet/t-{str(tid)[:8]}", "agent_type": AgentType.DEMO, "model": "demo",
        "prompt": prompt,
    }  # fmt: skip
    fields.update(kw)
    return SpawnSpec(**fields)


async def wait_exit(rt: LocalRuntime, task_id: uuid.UUID, timeout: float = 30.0):
    for _ in range(int(timeout / 0.05)):
        status = await rt.exit_status(task_id)
        if status is not None:
            return status
        await asyncio.sleep(0.05)
    raise AssertionError(f"agent {task_id} did not exit; log:\n{await rt.logs(task_id)}")


async def test_demo_agent_runs_commits_pushes_and_hides_its_prompt(
    tmp_path: Path, db: Database, su: asyncpg.Connection, repo: Path
) -> None:
    rt = make_runtime(tmp_path, db)
    rt.secrets.environ = {"FLEET_DEMO_DELAY": "0.4"}  # slow enough to be seen by ps
    token = f"SECRET-PROMPT-{uuid.uuid4().hex}"
    s = spec(repo, f"fix the bug {token}")
    seen: list[str] = []

    async def watch_ps() -> None:
        while True:
            # -ww: never truncate to $COLUMNS (CI sets it; the launcher path is long)
            ps = ["ps", "-ww", "-eo", "args"]
            out = await asyncio.to_thread(subprocess.run, ps, capture_output=True, text=True)
            seen.append(out.stdout)
            await asyncio.sleep(0.02)

    watcher = asyncio.create_task(watch_ps())
    try:
        handle = await rt.spawn(s)
        assert await rt.is_alive(s.task_id) and await rt.alive_tasks() == {s.task_id}
        status = await wait_exit(rt, s.task_id)
        assert await rt.alive_tasks() == set()  # the pane stays (remain-on-exit), dead
    finally:
        watcher.cancel()
        await rt.tmux.kill_server()
    assert len(seen) > 3 and not any(token in out for out in seen)
    assert any("runtime/launch.py" in out for out in seen)  # ps did see the launcher
    assert status.code == 0 and not status.oom
    assert not await rt.is_alive(s.task_id)
    assert handle.worktree_path.is_dir() and handle.host_id == "test-host"
    assert git(handle.worktree_path, "rev-parse", "--abbrev-ref", "HEAD").strip() == s.branch
    assert git(origin_of(repo), "branch", "--list", s.branch) == ""  # agents do not push
    assert await rt.publish(repo, s.task_id, s.branch)  # the engine does
    assert not await rt.publish(repo, s.task_id, s.branch)  # once per new commit
    pushed = git(origin_of(repo), "show", f"{s.branch}:fleet-demo/{s.task_id}.md")
    assert pushed == s.prompt
    leftovers = {p.name for p in rt.run_dir(s.task_id).iterdir()}
    assert "prompt" not in leftovers and "env" not in leftovers
    audit = await su.fetchrow("SELECT * FROM fleet_audit WHERE task_id = $1", s.task_id)
    assert audit["event_type"] == "fleet.secrets_issued"
    assert audit["detail"] == (
        '{"names": ["FLEET_AGENT_TYPE", "FLEET_ATTEMPT", "FLEET_DEMO_DELAY", "FLEET_TASK_ID"], '
        '"missing": [], "agent_type": "demo"}'
    )


HOSTILE = {
    "subst": "$(touch {canary}) and ${{HOME}}",
    "backticks": "`touch {canary}`",
    "semicolon": "; touch {canary}; echo done",
    "newlines": "line one\n\nline three\r\n; touch {canary}\n",
    "tmux-keys": "C-c\nEnter\nC-d\n\x03\x04 {canary}",
    "dashes": "-- --help -rf {canary}",
    "utf8-5000": ("é✓ünïcödé " * 500)[:5000],
}


async def test_hostile_prompts_arrive_byte_exact_and_run_nothing(
    tmp_path: Path, rt: LocalRuntime, repo: Path
) -> None:
    canary = tmp_path / "pwned"
    specs = [spec(repo, text.format(canary=canary)) for text in HOSTILE.values()]
    await asyncio.gather(*(rt.spawn(s) for s in specs))
    for s in specs:
        status = await wait_exit(rt, s.task_id)
        assert status.code == 0, await rt.logs(s.task_id)
        await rt.publish(repo, s.task_id, s.branch)
        blob = subprocess.run(
            ["git", "-C", str(origin_of(repo)), "show", f"{s.branch}:fleet-demo/{s.task_id}.md"],
            check=True, capture_output=True,
        ).stdout  # fmt: skip
        assert blob == s.prompt.encode()
    assert not canary.exists()


@pytest.mark.parametrize(
    "branch",
    [
        "",
        "-rf",
        "a b",
        "x;rm",
        "a..b",
        "a/../../b",
        "$(x)",
        "a\0b",
        "b" * 129,
        "a//b",
        "ok/",
        ".hidden",
        "a.lock",
        "C-c Enter",
    ],
)
def test_bad_branch_names_are_rejected(branch: str) -> None:
    with pytest.raises(BadInputError) as err:
        validate_branch(branch)
    assert err.value.field == "branch"


def test_good_branch_names() -> None:
    for name in ("fleet/alice-1a2b3c4d", "feature/x.y_z-1", "main"):
        assert validate_branch(name) == name


def test_paths_must_stay_under_the_base(tmp_path: Path) -> None:
    assert path_under(tmp_path, "abc") == (tmp_path / "abc").resolve()
    for bad in ("../etc", "../../etc/passwd", "/etc", "a/../../x", ".."):
        with pytest.raises(BadInputError):
            path_under(tmp_path, bad)
    (tmp_path / "link").symlink_to("/etc")
    with pytest.raises(BadInputError):
        path_under(tmp_path, "link", "passwd")


async def test_bad_spawn_input_has_no_side_effect(
    rt: LocalRuntime, repo: Path, tmp_path: Path
) -> None:
    before = git(repo, "worktree", "list")
    cases = [
        (spec(repo, branch="bad branch"), "branch"),
        (spec(repo, base_branch="../main"), "base_branch"),
        (spec(repo, base_branch="no-such-branch"), "base_branch"),
        (spec(tmp_path, branch="fleet/x"), "repository"),  # not a git repository
        (spec(repo, branch="main"), "branch"),  # exists already
    ]
    for s, field in cases:
        with pytest.raises(BadInputError) as err:
            await rt.spawn(s)
        assert err.value.field == field
        assert not rt.run_dir(s.task_id).exists()
    assert git(repo, "worktree", "list") == before
    assert await rt.list_active() == []
    assert not (rt.paths.worktrees).exists() or not any(rt.paths.worktrees.iterdir())


async def test_twenty_spawns_at_once_into_one_repository(rt: LocalRuntime, repo: Path) -> None:
    specs = [spec(repo, f"task {i}") for i in range(20)]
    handles = await asyncio.gather(*(rt.spawn(s) for s in specs))
    assert len({h.worktree_path for h in handles}) == 20
    statuses = [await wait_exit(rt, s.task_id) for s in specs]
    odd = [(st, await rt.logs(s.task_id, 30)) for s, st in zip(specs, statuses, strict=True)
           if st.code != 0]  # fmt: skip
    assert odd == []  # (seen once under heavy load: -1, a pane that died with no exit record)
    assert all((h.worktree_path / ".git").is_dir() for h in handles)  # clones, not worktrees
    assert len(git(repo, "worktree", "list").splitlines()) == 1
    await asyncio.gather(*(rt.publish(repo, s.task_id, s.branch) for s in specs))
    branches = git(origin_of(repo), "branch", "--list", "fleet/*").split()
    assert sorted(branches) == sorted(s.branch for s in specs)


@pytest.mark.parametrize(("marker", "code"), [("[demo:fail]", 1), ("[demo:oom]", 137)])
async def test_exit_markers(rt: LocalRuntime, repo: Path, marker: str, code: int) -> None:
    s = spec(repo, f"do it {marker}")
    await rt.spawn(s)
    status = await wait_exit(rt, s.task_id)
    assert status.code == code and status.oom == (code == 137)
    assert not await rt.is_alive(s.task_id)
    assert await rt.list_active() == [s.task_id]  # the dead pane stays until cleanup
    assert f"exited with status {code}" in await rt.logs(s.task_id)


async def test_hang_and_stall_stay_alive_until_killed(rt: LocalRuntime, repo: Path) -> None:
    hang, stall = spec(repo, "work [demo:hang]"), spec(repo, "think [demo:stall]")
    await rt.spawn(hang)
    await rt.spawn(stall)

    async def both_at_work() -> bool:  # the hanging agent says so, then never ends; the
        # stalling one thinks aloud again and again
        stalling = (await rt.logs(stall.task_id)).count("thinking ...")
        return "waiting forever" in await rt.logs(hang.task_id) and stalling >= 2

    await eventually(both_at_work, timeout=60)
    assert await rt.is_alive(hang.task_id) and await rt.is_alive(stall.task_id)
    for s in (hang, stall):  # neither commits
        checkout = rt.paths.worktrees / str(s.task_id)
        assert git(checkout, "rev-list", "--count", "origin/main..HEAD").strip() == "0"
    assert await rt.exit_status(stall.task_id) is None
    assert await rt.kill(hang.task_id) and await rt.kill(stall.task_id)
    for s in (hang, stall):
        assert not await rt.is_alive(s.task_id)
        status = await rt.exit_status(s.task_id)
        assert status is not None and status.code == 143 and status.signal == "SIGTERM"
    assert await rt.list_active() == []
    assert await rt.kill(hang.task_id) is False


async def test_kill_targets_exact_session_names(rt: LocalRuntime, tmp_path: Path) -> None:
    await rt.tmux.new_session("fleet-ab", tmp_path, ["sleep", "60"])
    await rt.tmux.new_session("fleet-abc", tmp_path, ["sleep", "60"])
    assert await rt.tmux.kill_session("fleet-a") is False  # no prefix match
    assert await rt.tmux.kill_session("fleet-abc") is True
    assert await rt.tmux.has_session("fleet-ab")
    assert not await rt.tmux.has_session("fleet-abc")
    assert sorted(await rt.tmux.list_sessions()) == ["fleet-ab"]


async def test_list_active_sees_only_our_socket(
    rt: LocalRuntime, repo: Path, tmp_path: Path, db
) -> None:
    other = make_runtime(tmp_path / "other", db)
    try:
        await other.tmux.new_session(f"fleet-{uuid.uuid4()}", tmp_path, ["sleep", "60"])
        s = spec(repo, "x [demo:stall]")
        await rt.spawn(s)
        assert await rt.list_active() == [s.task_id]
    finally:
        await other.tmux.kill_server()


async def test_logs_bounds(rt: LocalRuntime, repo: Path) -> None:
    s = spec(repo, "x")
    await rt.spawn(s)
    await wait_exit(rt, s.task_id)
    assert (await rt.logs(s.task_id, lines=1)).count("\n") == 0
    for bad in (0, 1001):
        with pytest.raises(BadInputError):
            await rt.logs(s.task_id, lines=bad)
    assert rt.attach_command(s.task_id)[-2:] == ["-t", f"=fleet-{s.task_id}"]


async def test_agent_sees_only_its_allowlisted_variables(
    tmp_path: Path, db: Database, repo: Path
) -> None:
    printer = [sys.executable, "-c", "import os; print(' '.join(sorted(os.environ)))"]
    rt = make_runtime(tmp_path, db, custom={"command": printer, "env": ["ANTHROPIC_API_KEY"]})
    try:
        s = spec(repo, "x", agent_type=AgentType.CUSTOM)
        await rt.spawn(s)
        await wait_exit(rt, s.task_id)
        names = (await rt.logs(s.task_id)).splitlines()[1].split()
        assert {"ANTHROPIC_API_KEY", "FLEET_TASK_ID", "FLEET_AGENT_TYPE"} <= set(names)
        assert "OPENAI_API_KEY" not in names and "FLEET_DATA_DIR" not in names
    finally:
        await rt.tmux.kill_server()


async def test_failed_setup_or_start_undoes_everything(
    tmp_path: Path, db: Database, repo: Path
) -> None:
    rt = make_runtime(tmp_path, db, custom={"command": ["/nonexistent/agent-cli"]})
    try:
        bad_setup = spec(repo, "x", setup=[sys.executable, "-c", "import sys; sys.exit(3)"])
        with pytest.raises(SpawnError) as err:
            await rt.spawn(bad_setup)
        assert err.value.step == "setup"
        missing = spec(repo, "x", agent_type=AgentType.CUSTOM)
        with pytest.raises(SpawnError) as err:
            await rt.spawn(missing)
        assert err.value.step == "not_installed" and "agent-cli" in str(err.value)
        for s in (bad_setup, missing):
            assert not (rt.paths.worktrees / str(s.task_id)).exists()
            assert git(repo, "branch", "--list", s.branch) == ""
        assert await rt.list_active() == []
    finally:
        await rt.tmux.kill_server()


async def test_an_undo_that_cannot_remove_the_checkout_says_so_in_the_log(
    rt: LocalRuntime, repo: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The setup makes a file of its checkout undeletable (immutable as root, in a read-only
    directory otherwise) and fails: the spawn still fails with the setup's error, and the step
    of the undo that could not be done is logged with the task (nothing is printed)."""
    held = "mkdir held && touch held/f && (chattr +i held/f 2>/dev/null || chmod 555 held)"
    s = spec(repo, "x", setup=["sh", "-c", f"{held} && exit 3"])
    caplog.set_level(logging.INFO, logger="fleet_core.runtime.local")
    with pytest.raises(SpawnError) as err:
        await rt.spawn(s)
    assert err.value.step == "setup"
    undo = [r for r in caplog.records if r.getMessage().startswith("undo of a failed spawn")]
    assert [getattr(r, "step", None) for r in undo] == ["remove the checkout"]
    assert all(getattr(r, "task", None) == str(s.task_id) for r in undo)
    assert all(r.levelno == logging.ERROR for r in undo)
    checkout = rt.paths.worktrees / str(s.task_id)
    assert checkout.is_dir()  # really left behind, and reported
    subprocess.run(["chattr", "-i", str(checkout / "held" / "f")], capture_output=True)
    (checkout / "held").chmod(0o755)


async def test_cleanup_snapshots_unpushed_and_dirty_work(
    rt: LocalRuntime, repo: Path, tmp_path: Path
) -> None:
    s = spec(repo, "fail first [demo:fail]")
    handle = await rt.spawn(s)
    await wait_exit(rt, s.task_id)
    wt = handle.worktree_path
    (wt / "one.txt").write_text("first unpushed commit\n")
    git(wt, "add", "one.txt")
    git(wt, "commit", "-q", "-m", "unpushed one")
    (wt / "two.txt").write_text("second unpushed commit\n")
    git(wt, "add", "two.txt")
    git(wt, "commit", "-q", "-m", "unpushed two")
    (wt / "README.md").write_text("sample\nedited but not committed\n")
    (wt / "new.bin").write_bytes(bytes(range(256)))
    latin1 = "caf\xe9 cr\xe8me\n".encode("latin-1")  # not UTF-8: kept byte for byte
    (wt / "notes.txt").write_bytes(latin1)
    (wt / ".gitignore").write_text("build/\n*.local\n")
    (wt / "build").mkdir()
    (wt / "build" / "out.o").write_bytes(b"\x7fELF object")
    (wt / "settings.local").write_text("token-free local settings\n")
    commits = git(wt, "rev-list", f"main..{s.branch}").split()

    result = await rt.cleanup(s.task_id, repo, s.branch)
    assert result.worktree_removed and not wt.exists()
    assert result.branch_deleted is False  # not merged: kept
    assert result.unpushed == 2 and result.bundle and result.patch
    assert result.snapshot_dir and result.snapshot_dir.is_relative_to(rt.paths.snapshots)

    restored = tmp_path / "restored"
    subprocess.run(["git", "clone", "-q", str(origin_of(repo)), str(restored)], check=True)
    git(restored, "fetch", "-q", str(result.bundle), f"{s.branch}:{s.branch}")
    git(restored, "checkout", "-q", s.branch)
    assert git(restored, "rev-list", f"main..{s.branch}").split() == commits
    git(restored, "apply", str(result.patch))
    assert (restored / "README.md").read_text() == "sample\nedited but not committed\n"
    assert (restored / "new.bin").read_bytes() == bytes(range(256))
    assert (restored / "notes.txt").read_bytes() == latin1
    assert result.ignored is not None and result.ignored_skipped == 0
    subprocess.run(["tar", "-xf", str(result.ignored), "-C", str(restored)], check=True)
    assert (restored / "build" / "out.o").read_bytes() == b"\x7fELF object"
    assert (restored / "settings.local").read_text() == "token-free local settings\n"


async def test_cleanup_of_clean_merged_work_deletes_the_branch(
    rt: LocalRuntime, repo: Path
) -> None:
    s = spec(repo, "tiny change")
    await rt.spawn(s)
    await wait_exit(rt, s.task_id)
    await rt.publish(repo, s.task_id, s.branch)
    git(repo, "merge", "-q", "--ff-only", s.branch)
    result = await rt.cleanup(s.task_id, repo, s.branch)
    assert result.snapshot_dir is None and result.branch_deleted and result.worktree_removed
    assert not rt.run_dir(s.task_id).exists()


async def test_logs_of_a_missing_session_is_an_error(rt: LocalRuntime, tmp_path: Path) -> None:
    from fleet_core.runtime.tmux import TmuxError

    await rt.tmux.new_session("fleet-other", tmp_path, ["sh", "-c", "echo other; sleep 60"])
    with pytest.raises(TmuxError):
        await rt.logs(uuid.uuid4())
    assert await rt.is_alive(uuid.uuid4()) is False
    assert await rt.exit_status(uuid.uuid4()) is None


async def test_kill_escalates_to_sigkill_for_an_agent_ignoring_sigterm(
    tmp_path: Path, db: Database, repo: Path
) -> None:
    stubborn = [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, "
                "signal.SIG_IGN); print('ignoring SIGTERM', flush=True); time.sleep(120)"]  # fmt: skip
    rt = make_runtime(tmp_path, db, custom={"command": stubborn})
    try:
        s = spec(repo, "x", agent_type=AgentType.CUSTOM)
        await rt.spawn(s)

        async def ignoring() -> bool:  # SIGTERM is ignored from here on
            return "ignoring SIGTERM" in await rt.logs(s.task_id)

        await eventually(ignoring)
        assert await rt.is_alive(s.task_id)
        assert await rt.kill(s.task_id, grace_s=0.5)
        assert not await rt.is_alive(s.task_id)
        status = await rt.exit_status(s.task_id)
        assert status is not None and status.code == 137 and status.signal == "SIGKILL"
        assert status.killed_by_fleet and not status.oom
        assert not (rt.run_dir(s.task_id) / "exit.tmp").exists()  # written whole, renamed
        assert await rt.list_active() == []
    finally:
        await rt.tmux.kill_server()


PARTIAL_EXIT_RECORDS = [
    b"exit_co",  # cut inside the first key
    b"exit_code=13",  # cut inside 137: must not read as 13
    b"exit_code=\n",
    b"signal=SIGTERM\n",  # no exit code at all
    b"exit_code=0\nended_at=2024-13-45T99\n",
    b"exit_code=\xff\xfe\n",
]


@pytest.mark.parametrize("partial", PARTIAL_EXIT_RECORDS)
async def test_a_partial_exit_record_reads_as_not_written_yet(
    rt: LocalRuntime, repo: Path, partial: bytes
) -> None:
    s = spec(repo, "think [demo:stall]")
    await rt.spawn(s)
    (rt.run_dir(s.task_id) / "exit").write_bytes(partial)
    assert await rt.exit_status(s.task_id) is None  # the pane still runs
    assert await rt.is_alive(s.task_id)
    assert s.task_id in await rt.alive_tasks()
    (rt.run_dir(s.task_id) / "exit").unlink()
    assert await rt.kill(s.task_id)
    status = await rt.exit_status(s.task_id)
    assert status is not None and status.code == 143


ZOMBIE_AGENT = """
import os, signal, sys, time
group = os.getpgrp()
if os.fork() == 0:  # a helper outside the agent's group that never reaps its child
    os.setpgid(0, 0)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.fork() == 0:  # the child joins the agent's group: it becomes a zombie there
        os.setpgid(0, group)
        with open(sys.argv[1] + ".tmp", "w") as fh:
            fh.write(f"{os.getppid()} {os.getpid()}")
        os.rename(sys.argv[1] + ".tmp", sys.argv[1])
        time.sleep(3600)
        os._exit(0)
    time.sleep(3600)
    os._exit(0)
print("agent with a child in its group", flush=True)
time.sleep(3600)
"""


async def test_kill_does_not_wait_on_a_group_of_zombies(
    tmp_path: Path, db: Database, repo: Path
) -> None:
    """After SIGTERM the agent's group holds only a zombie (its parent, outside the group,
    never reaps it): the kill is over then, not after the grace (here an hour)."""
    pids = tmp_path / "pids"
    rt = make_runtime(tmp_path, db, custom={"command": [sys.executable, "-c", ZOMBIE_AGENT,
                                                        str(pids)]})  # fmt: skip
    rt.kill_grace_s = 3600.0
    helper = 0
    try:
        s = spec(repo, "x", agent_type=AgentType.CUSTOM)
        await rt.spawn(s)
        for _ in range(400):
            if pids.exists():
                break
            await asyncio.sleep(0.05)
        helper, child = map(int, pids.read_text().split())
        # A guard against a hang only: without the fix this waits the hour's grace.
        assert await asyncio.wait_for(rt.kill(s.task_id), 120)
        assert Path(f"/proc/{child}/stat").read_text().split(") ")[1][0] == "Z"  # still there
        status = await rt.exit_status(s.task_id)
        assert status is not None and status.code == 143 and not status.killed_by_fleet
        assert await rt.list_active() == []
    finally:
        if helper:
            os.kill(helper, signal.SIGKILL)
        await rt.tmux.kill_server()


def test_repo_config_file_and_user_override(repo: Path) -> None:
    from fleet_core.errors import ConfigError
    from fleet_core.runtime.repo_config import load_repo_config

    assert load_repo_config(repo).setup is None
    (repo / ".fleet.toml").write_text(
        'setup = "touch .ready"\nci = ["pytest", "-q"]\nbase = "main"\n'
    )
    cfg = load_repo_config(repo)
    assert cfg.setup == ["touch", ".ready"] and cfg.ci == ["pytest", "-q"]
    user = {str(repo): {"setup": ["make", "deps"], "forge": "local"}}
    cfg = load_repo_config(repo, user)
    assert cfg.setup == ["make", "deps"] and cfg.forge == "local" and cfg.base == "main"
    (repo / ".fleet.toml").write_text('forge = "gitlab"\n')
    with pytest.raises(ConfigError, match="forge"):
        load_repo_config(repo)


async def test_setup_command_runs_in_the_new_worktree(rt: LocalRuntime, repo: Path) -> None:
    s = spec(repo, "x", setup=["touch", "setup-ran"])
    handle = await rt.spawn(s)
    assert (handle.worktree_path / "setup-ran").exists()
    await wait_exit(rt, s.task_id)


async def test_git_in_an_agents_checkout_runs_nothing_the_agent_planted(
    rt: LocalRuntime, repo: Path, tmp_path: Path
) -> None:
    """The checkout's `.git` is agent-written: hooks (reference-transaction, pre-push,
    post-checkout), an fsmonitor command, an external diff and a pager planted there never
    run when the engine publishes, diffs, snapshots and removes the checkout."""
    s = spec(repo, "plant [demo:fail]")
    handle = await rt.spawn(s)
    await wait_exit(rt, s.task_id)
    co = handle.worktree_path
    (co / "work.txt").write_text("committed by the agent\n")
    git(co, "add", "work.txt")
    git(co, "commit", "-qm", "work")
    (co / "dirty.txt").write_text("not committed\n")
    # Then the traps (planted after the agent's own commit, which would run them itself).
    canary = tmp_path / "pwned"
    hook = f'#!/bin/sh\necho "$0" >> {canary}\n'
    hooks = co / ".git" / "hooks"
    for name in ("reference-transaction", "pre-push", "post-checkout", "pre-commit"):
        (hooks / name).write_text(hook)
        (hooks / name).chmod(0o755)
    planted = tmp_path / "planted.sh"
    planted.write_text(hook)
    planted.chmod(0o755)
    for key, value in (("core.fsmonitor", str(planted)), ("diff.external", str(planted)),
                       ("core.pager", str(planted)), ("core.hooksPath", str(hooks))):  # fmt: skip
        git(co, "config", key, value)
    assert await rt.publish(repo, s.task_id, s.branch)
    assert git(origin_of(repo), "rev-parse", s.branch).strip()
    result = await rt.cleanup(s.task_id, repo, s.branch)
    assert result.worktree_removed and result.patch is not None
    assert not canary.exists(), canary.read_text()
