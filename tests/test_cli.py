"""The command line as a user runs it: a subprocess against the session's embedded cluster."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Awaitable
from pathlib import Path

import asyncpg

from conftest import demo_log, eventually, fleet, new_task, normalised
from fleet_core.cli.verbs import VERBS
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import InvalidTransitionError
from fleet_core.lifecycle import TaskStatus
from fleet_core.registry import TaskRegistry
from fleet_core.runtime.paths import RuntimePaths

README = Path(__file__).resolve().parent.parent / "README.md"


def test_version() -> None:
    result = fleet("--version")
    assert result.returncode == 0 and result.stdout.startswith("fleet 0.")


async def test_status_json_empty_then_with_a_task(su: asyncpg.Connection, db: Database) -> None:
    result = fleet("status", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "active": 0, "completed": 0, "failed": 0, "queued": 0, "paused": None,
        "forge_errors": {}, "engine": None, "tasks": []
    }  # fmt: skip
    rec = await TaskRegistry(db, Tenant.operator("alice")).create(new_task())
    await TaskRegistry(db, Tenant.operator("bob")).create(new_task())
    doc = json.loads(fleet("status", "--json").stdout)
    assert doc["active"] == 1 and [t["id"] for t in doc["tasks"]] == [str(rec.id)]
    for key in ("id", "status", "branch", "agent_type", "model", "task_type", "pr_number",
                "ci_status", "retry_count"):  # fmt: skip
        assert key in doc["tasks"][0]
    assert json.loads(fleet("status", "--json", "--all").stdout)["active"] == 2
    text = fleet("status").stdout
    assert rec.short_id in text and "proposed" in text
    assert text.startswith("NO ENGINE: no engine runs on this host for this data dir")
    shown = json.loads(fleet("show", rec.short_id, "--json").stdout)
    assert shown["id"] == str(rec.id) and shown["status"] == "proposed"
    assert "fix the flaky test" in fleet("show", str(rec.id)[:6]).stdout
    filtered = json.loads(fleet("status", "--json", "--status", "running,failed").stdout)
    assert filtered["tasks"] == [] and filtered["active"] == 1


async def test_status_of_other_operator_is_empty(su: asyncpg.Connection, db: Database) -> None:
    rec = await TaskRegistry(db, Tenant.operator("alice")).create(new_task())
    await TaskRegistry(db, Tenant.operator("alice")).transition(
        rec.id, TaskStatus.CANCELLED, expected_version=0
    )
    assert json.loads(fleet("status", "--json", FLEET_OPERATOR="carol").stdout)["tasks"] == []
    assert fleet("show", rec.short_id, FLEET_OPERATOR="carol").returncode == 3


def test_exit_codes_and_messages(pg) -> None:
    missing = fleet("show", "deadbeef")
    assert missing.returncode == 3 and "not found" in missing.stderr
    bad = fleet("status", "--status", "sleeping")
    assert bad.returncode == 2 and "--status" in bad.stderr
    bad_id = fleet("show", "x!")
    assert bad_id.returncode == 2 and "task_id" in bad_id.stderr
    denied = fleet("status", "--all", FLEET_TIER="builder")
    assert denied.returncode == 4 and "sovereign" in denied.stderr
    as_json = fleet("show", "deadbeef", "--json")
    assert json.loads(as_json.stderr)["error"] == "not_found" and as_json.stdout == ""


def test_bad_config_is_named_in_one_line(tmp_path: Path) -> None:
    env_bad = fleet("status", FLEET_TIER="king")
    assert env_bad.returncode == 2
    assert env_bad.stderr.count("\n") == 1 and "tier (from FLEET_TIER)" in env_bad.stderr
    not_json = fleet("status", FLEET_TIER_LIMITS="{builder: 2}")
    assert not_json.returncode == 2 and not_json.stderr.count("\n") == 1
    assert "tier_limits (from FLEET_TIER_LIMITS): not valid JSON" in not_json.stderr
    lower = fleet("status", fleet_global_cap="0")  # names are matched ignoring case
    assert lower.returncode == 2 and "global_cap (from FLEET_GLOBAL_CAP)" in lower.stderr
    cfg = tmp_path / "fleet.toml"
    cfg.write_text('log_level = "LOUD"\n')
    file_bad = fleet("status", FLEET_CONFIG=str(cfg))
    assert file_bad.returncode == 2 and f"log_level (in {cfg})" in file_bad.stderr
    cfg.write_text("operator = [\n")
    broken = fleet("status", FLEET_CONFIG=str(cfg))
    assert broken.returncode == 2 and str(cfg) in broken.stderr
    cfg.write_text('[routing.table.docs]\nagent = "codex"\nmodel = "--yolo"\n')
    bad_model = fleet("status", FLEET_CONFIG=str(cfg))
    assert bad_model.returncode == 2 and "routing.table.docs.model" in bad_model.stderr
    cfg.write_text('operator = "dora"\n')
    shown = json.loads(fleet("config", "show", FLEET_CONFIG=str(cfg)).stdout)
    assert shown["operator"] == "alice"  # the environment wins over the file
    assert fleet("config", "path", FLEET_CONFIG=str(cfg)).stdout.strip() == str(cfg)


def test_config_sources_merge_key_by_key(tmp_path: Path) -> None:
    """Keyword arguments over FLEET_* variables over the file; tables merged key by key."""
    cfg = tmp_path / "fleet.toml"
    cfg.write_text('tier = "builder"\n[secrets]\nA = "from file"\n[tier_limits]\nbuilder = 2\n')
    shown = fleet("config", "show", FLEET_CONFIG=str(cfg), FLEET_SECRETS='{"B": "from env"}',
                  FLEET_TIER_LIMITS='{"builder": 4, "architect": 5}')  # fmt: skip
    doc = json.loads(shown.stdout)
    assert doc["secrets"] == {"A": "***", "B": "***"} and doc["tier"] == "builder"
    assert doc["tier_limits"] == {"builder": 4, "architect": 5}
    unknown = fleet("config", "show", FLEET_CONFIG=str(cfg), FLEET_NOT_A_SETTING="1")
    assert unknown.returncode == 0  # only FLEET_<setting> names are read from the environment
    cfg.write_text('colour = "blue"\n')
    extra = fleet("config", "show", FLEET_CONFIG=str(cfg))
    assert extra.returncode == 2 and f"colour (in {cfg}): unknown setting" in extra.stderr


def test_config_show_masks_passwords() -> None:
    out = fleet("config", "show", FLEET_DATABASE_URL="postgresql://u:hunter2@h/db").stdout
    assert "hunter2" not in out and "u:***@h/db" in out


def test_db_status_and_url(pg) -> None:
    status = fleet("db", "status")
    assert status.returncode == 0 and "0001_core  applied" in status.stdout
    url = fleet("db", "url").stdout.strip()
    assert url == pg.owner_dsn
    assert fleet("db", "url", "--engine").stdout.strip() == pg.engine_dsn
    assert fleet("db", "down", "0").returncode == 2


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = (README.parent / ".ci" / "run").read_text()
    command = next(line for line in ci.splitlines() if "pytest" in line).strip()
    assert command in README.read_text()


SLEEPER = """
import asyncio, sys
from fleet_core.cli.context import opened
from fleet_core.cli.runner import guarded, run_async
from fleet_core.config import load_settings
from fleet_core.logs import setup_file_logging

settings = load_settings()
setup_file_logging(settings.log_dir)

async def main():
    async with opened(settings):
        print("ready", flush=True)
        await asyncio.sleep(60)

sys.exit(guarded(lambda: run_async(main)))
"""


def test_sigterm_closes_the_pool_cleanly(pg) -> None:
    import signal

    proc = subprocess.Popen(
        [sys.executable, "-c", SLEEPER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    log = pg.settings.log_dir / "fleet.log"
    closed_before = log.read_text().count("database pool closed")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "interrupted" in err
    assert log.read_text().count("database pool closed") == closed_before + 1


async def _equal(got: Awaitable[object], want: object) -> bool:
    return await got == want


def tmux_socket() -> str:
    return RuntimePaths.under(Path(os.environ["FLEET_DATA_DIR"])).tmux_socket


async def test_spawn_status_stop_end_to_end(su: asyncpg.Connection, repo: Path) -> None:
    env = {"FLEET_SECRETS": '{"FLEET_DEMO_DELAY": "0"}'}
    try:
        out = fleet("spawn", "--repo", str(repo), "--type", "docs", "--agent", "demo",
                    "--json", "wait for me [demo:hang]", **env)  # fmt: skip
        assert out.returncode == 0, out.stderr
        task = json.loads(out.stdout)
        assert task["status"] == "running" and task["branch"].startswith("fleet/wait-for-me-")
        doc = json.loads(fleet("status", "--json").stdout)
        assert [(t["id"], t["status"], t["branch"]) for t in doc["tasks"]] == [
            (task["id"], "running", task["branch"])
        ]
        session = f"={task['tmux_session']}"
        has = ["tmux", "-L", tmux_socket(), "has-session", "-t", session]
        assert subprocess.run(has, capture_output=True).returncode == 0
        hang = demo_log(task, "waiting forever")

        async def logs() -> list[str]:
            out = fleet("logs", task["id"][:8], "-n", "20", "--json")
            assert out.returncode == 0, out.stderr
            return normalised(json.loads(out.stdout)["lines"])

        await eventually(lambda: _equal(logs(), hang), timeout=30)
        assert await logs() == hang
        text = fleet("logs", task["id"][:8], "-n", "2")  # the last 2 lines, as text
        assert normalised(text.stdout.splitlines()) == hang[-2:]
        stopped = fleet("stop", task["id"][:8], "--json")
        assert stopped.returncode == 0, stopped.stderr
        assert json.loads(stopped.stdout)["status"] == "cancelled"
        assert subprocess.run(has, capture_output=True).returncode == 1
        again = fleet("stop", task["id"][:8])  # idempotent: exit 0, the task as it is
        assert again.returncode == 0, again.stderr
        assert again.stdout.strip() == f"{task['id'][:8]}: already cancelled; no agent running"
        again_json = fleet("stop", task["id"][:8], "--json")
        assert again_json.returncode == 0 and json.loads(again_json.stdout)["status"] == "cancelled"
        deleted = fleet("delete", task["id"][:8], "--json")
        assert deleted.returncode == 0 and json.loads(deleted.stdout)["id"] == task["id"]
        assert fleet("show", task["id"][:8]).returncode == 3
    finally:
        subprocess.run(["tmux", "-L", tmux_socket(), "kill-server"], capture_output=True)


async def test_spawn_denied_and_queued(su: asyncpg.Connection, repo: Path) -> None:
    env = {"FLEET_SECRETS": '{"FLEET_DEMO_DELAY": "0"}', "FLEET_TIER": "builder"}
    args = ["spawn", "--repo", str(repo), "--type", "docs", "--agent", "demo", "--json"]
    try:
        assert fleet(*args, "first [demo:hang]", **env).returncode == 0
        denied = fleet(*args, "second", **env)
        assert denied.returncode == 4 and denied.stdout == ""
        err = json.loads(denied.stderr)
        assert (err["error"], err["active"], err["limit"], err["tier"]) == (
            "spawn_denied", 1, 1, "builder"
        )  # fmt: skip
        queued = fleet(*args, "--queue", "second", **env)
        assert queued.returncode == 0 and json.loads(queued.stdout)["position"] == 1
        assert json.loads(fleet("status", "--json").stdout)["queued"] == 1
        observer = fleet(*args, "third", FLEET_TIER="observer")
        assert observer.returncode == 4 and "no fleet access" in observer.stderr
    finally:
        subprocess.run(["tmux", "-L", tmux_socket(), "kill-server"], capture_output=True)


async def test_bad_input_to_each_verb_exits_2_and_writes_nothing(
    su: asyncpg.Connection, repo: Path, tmp_path: Path
) -> None:
    spawn = ["spawn", "--agent", "demo", "--type", "docs"]
    cases = [
        ([*spawn, "--repo", str(tmp_path / "missing"), "x"], "--repo"),
        ([*spawn, "--repo", str(tmp_path), "x"], "--repo"),
        ([*spawn, "--repo", str(repo), "--base", "nope", "x"], "--base"),
        ([*spawn, "--repo", str(repo), "--base", "-x", "x"], "--base"),
        ([*spawn, "--repo", str(repo), "--max-retries", "11", "x"], "--max-retries"),
        ([*spawn, "--repo", str(repo), "--timeout-min", "1", "x"], "--timeout-min"),
        ([*spawn, "--repo", str(repo), "--context", "novalue", "x"], "--context"),
        ([*spawn, "--repo", str(repo), "--model=--dangerously-skip-permissions", "x"], "--model"),
        ([*spawn, "--repo", str(repo), "--model", "gpt 5; rm -rf", "x"], "--model"),
        ([*spawn, "--repo", str(repo), "   "], "DESCRIPTION"),
        (["spawn", "--repo", str(repo), "--type", "chores", "x"], "--type"),
        (["spawn", "--repo", str(repo), "--type", "docs", "--agent", "custom", "x"], "--agent"),
        (["stop", "x!"], "task_id"),
        (["delete", "zz"], "task_id"),
        (["logs", "abcd1234", "-n", "0"], "lines"),
        (["attach", "../etc"], "task_id"),
    ]
    worktrees = Path(os.environ["FLEET_DATA_DIR"]) / "worktrees"

    def listing() -> list[Path]:
        return sorted(worktrees.iterdir()) if worktrees.exists() else []

    before = listing()
    for argv, field in cases:
        result = fleet(*argv)
        assert result.returncode == 2, (argv, result.stderr)
        assert field in result.stderr, (argv, result.stderr)
    doc = json.loads(fleet("status", "--json").stdout)
    assert (doc["active"], doc["queued"], doc["tasks"]) == (0, 0, [])
    assert listing() == before


async def test_retry_and_merge_refusals(su: asyncpg.Connection, db: Database) -> None:
    rec = await TaskRegistry(db, Tenant.operator("alice")).create(new_task())
    merge = fleet("merge", rec.short_id, "--json")
    assert merge.returncode == 5 and json.loads(merge.stderr)["error"] == "merge_refused"
    assert json.loads(merge.stderr)["message"] == (
        f"task {rec.short_id} is waiting to start; only a ready task can be merged"
    )
    retry = fleet("retry", rec.short_id)
    assert retry.returncode == 5 and retry.stderr == (
        f"fleet: task {rec.short_id}: can only retry a failed or rejected task; "
        "this one is waiting to start\n"
    )
    delete = fleet("delete", rec.short_id)
    assert delete.returncode == 5 and delete.stderr == (
        f"fleet: task {rec.short_id} is waiting to start; only a merged, abandoned or "
        "cancelled task can be deleted (stop it first)\n"
    )


async def test_refusals_of_ended_tasks_say_what_to_do(su: asyncpg.Connection, db: Database) -> None:
    """No state-machine jargon: what the task is, and what to do instead."""
    alice = TaskRegistry(db, Tenant.operator("alice"))
    gone = await alice.create(new_task())
    for step in (TaskStatus.SPAWNING, TaskStatus.FAILED, TaskStatus.ABANDONED):
        gone = await alice.transition(gone.id, step, expected_version=gone.version)
    retry = fleet("retry", gone.short_id)
    assert retry.returncode == 5 and retry.stderr == (
        f"fleet: task {gone.short_id}: can only retry a failed or rejected task; this one was "
        "abandoned after 1 attempt: use `fleet spawn` again\n"
    )
    stopped = await alice.create(new_task(branch="fleet/other"))
    await alice.transition(stopped.id, TaskStatus.CANCELLED, expected_version=0)
    again = fleet("retry", stopped.short_id, "--json")
    assert again.returncode == 5 and json.loads(again.stderr) == {
        "error": "invalid_transition",
        "message": f"task {stopped.short_id}: can only retry a failed or rejected task; this "
        "one was cancelled: use `fleet spawn` again",
    }
    assert str(InvalidTransitionError(str(stopped.id), "cancelled", "cancelled")) == (
        f"task {stopped.short_id} is already cancelled: there is nothing to stop"
    )


async def test_demo_shows_every_path(su: asyncpg.Connection) -> None:
    """The README's run command: `fleet demo` (headless until the console exists)."""
    try:
        result = fleet("demo", "--headless")
    finally:
        subprocess.run(["tmux", "-L", tmux_socket(), "kill-server"], capture_output=True)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for step in ("queued", "pr_found", "ci_failed", "oom", "timeout", "retry (attempt 2",
                 "review_approved", "review_rejected", "retry_budget_exhausted",
                 "fleet demo: done"):  # fmt: skip
        assert step in out, step
    final = dict(
        reversed(line.split(maxsplit=1)) for line in out.split("fleet demo: done\n")[1].splitlines()
    )
    assert final == {
        "Add a multiply function to calc.py, with a test": "merged",
        "Fix the rounding in divide() [demo:ci-fail-once]": "merged",
        "Split calc.py into a package [demo:hang]": "abandoned",
        "Add a big-number mode [demo:oom]": "abandoned",
        "Add a power function [demo:review-reject-once]": "merged",
        "Document calc.py in the README": "merged",
        "Write a CHANGELOG entry": "merged",
    }
    # The demo's finished tasks feed the reputation figures.
    reputation = fleet("reputation", "--json")
    figures = {row["key"]: row for row in json.loads(reputation.stdout)}
    assert figures and all(row["confidence"] is not None for row in figures.values())
    assert figures["demo:demo:feature"]["n"] >= 2
    # The sample is a registered repository, granted to the demo's operator.
    rows = await su.fetch("SELECT r.name, g.operator_id FROM fleet_repositories r "
                          "JOIN fleet_repository_grants g ON g.repository_id = r.id")  # fmt: skip
    assert [tuple(r) for r in rows] == [("fleet-demo", "alice")]


# -- behaving like gh: usage errors, closed pipes, lazy imports, reads without migrations ---------


def test_usage_errors_are_one_line_with_exit_2() -> None:
    bad = fleet("spawn", "--type", "poetry", "x")
    assert bad.returncode == 2 and bad.stdout == "" and bad.stderr.count("\n") == 1
    assert bad.stderr.startswith("fleet: argument --type: invalid choice: 'poetry'")
    assert bad.stderr.rstrip().endswith("(see `fleet spawn --help`)")
    as_json = fleet("spawn", "--type", "poetry", "x", "--json")
    assert as_json.returncode == 2 and as_json.stdout == "" and as_json.stderr.count("\n") == 1
    doc = json.loads(as_json.stderr)
    assert doc["error"] == "usage" and "invalid choice: 'poetry'" in doc["message"]
    for argv, words in [
        (["spwn"], "invalid choice: 'spwn'"),
        (["db"], "the following arguments are required: VERB"),
        (["show"], "the following arguments are required: id"),
        (["status", "--limit", "many"], "argument --limit: invalid int value: 'many'"),
        (["--port"], "argument --port: expected one argument"),
        (["status", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ]:
        r = fleet(*argv)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, (argv, r.stderr)
        assert r.stderr.startswith("fleet: ") and words in r.stderr, (argv, r.stderr)


def test_help_still_prints_help() -> None:
    top = fleet("--help")
    assert top.returncode == 0 and top.stderr == ""
    for verb in VERBS:
        assert f"    {verb.name}" in top.stdout and verb.help in top.stdout
    spawn = fleet("spawn", "--help")
    assert spawn.returncode == 0 and spawn.stdout.startswith("usage: fleet spawn")
    assert "--type {bug_fix,feature,refactor,review,docs}" in spawn.stdout


async def test_a_closed_pipe_ends_quietly(su: asyncpg.Connection, db: Database) -> None:
    """`fleet show ID | head -1`: the reader is gone before fleet writes; exit 0, no traceback."""
    rec = await TaskRegistry(db, Tenant.operator("alice")).create(new_task())
    for argv in (["status"], ["status", "--json"], ["show", rec.short_id], ["--help"]):
        proc = subprocess.Popen(
            [sys.executable, "-m", "fleet_core", *argv],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "FLEET_OPERATOR": "alice"},
        )
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=60) == 0 and err == b"", (argv, err)


PROBE = """
import json, os, sys
from fleet_core.cli.main import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:  # --help
    code = exc.code
with open(os.environ["PROBE_OUT"], "w") as fh:
    json.dump({"code": code, "modules": sorted(sys.modules)}, fh)
"""


def imported_by(tmp_path: Path, *argv: str) -> set[str]:
    out = tmp_path / "probe.json"
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FLEET_OPERATOR": "alice", "PROBE_OUT": str(out)},
    )
    assert out.exists(), done.stderr
    return set(json.loads(out.read_text())["modules"])


def test_each_verb_imports_only_what_it_needs(pg, tmp_path: Path) -> None:
    engine = {"fleet_core.conductor", "fleet_core.runtime.local", "libtmux", "fastapi",
              "textual", "jwt", "pydantic_settings", "fleet_core.governor"}  # fmt: skip
    verbs = {f"fleet_core.cli.{v.module}" for v in VERBS}
    helped = imported_by(tmp_path, "--help")
    assert not helped & (engine | verbs | {"asyncpg", "pydantic", "asyncio"})
    status = imported_by(tmp_path, "status", "--json")
    assert "fleet_core.cli.task_cmds" in status and "asyncpg" in status
    assert not status & (engine | verbs - {"fleet_core.cli.task_cmds"}), status & engine
    usage = imported_by(tmp_path, "spawn", "--type", "poetry", "x")
    assert "fleet_core.cli.agent_cmds" in usage
    assert not usage & (engine | {"asyncpg", "fleet_core.cli.task_cmds"})


def test_reading_verbs_skip_bootstrap_and_migrations(pg) -> None:
    """status, show and logs connect only as the engine: with an owner role that cannot log in,
    they still answer, while a verb that writes (which migrates first) cannot start."""
    assert "fleet_engine@" in pg.engine_dsn
    env = {
        "FLEET_DATABASE_URL": pg.engine_dsn.replace("fleet_engine@", "nobody_at_all@"),
        "FLEET_ENGINE_DATABASE_URL": pg.engine_dsn,
    }
    status = fleet("status", "--json", **env)
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["tasks"] is not None
    assert fleet("show", "deadbeef", **env).returncode == 3
    assert fleet("logs", "deadbeef", **env).returncode == 3
    stop = fleet("stop", "deadbeef", **env)
    assert stop.returncode == 1 and "nobody_at_all" in stop.stderr


async def test_a_reading_verb_on_a_schema_behind_says_migrate(pg, su: asyncpg.Connection) -> None:
    await su.execute("DROP DATABASE IF EXISTS fleet_behind")
    await su.execute("CREATE DATABASE fleet_behind OWNER fleet_owner")
    try:
        owner = pg.owner_dsn.replace("/fleet?", "/fleet_behind?")
        engine = pg.engine_dsn.replace("/fleet?", "/fleet_behind?")
        assert owner != pg.owner_dsn and engine != pg.engine_dsn
        env = {"FLEET_DATABASE_URL": owner, "FLEET_ENGINE_DATABASE_URL": engine}
        behind = fleet("status", **env)
        assert behind.returncode == 1 and behind.stderr.count("\n") == 1
        assert "the database schema is older than this fleet" in behind.stderr
        assert behind.stderr.rstrip().endswith("run `fleet db migrate`")
    finally:
        await su.execute("DROP DATABASE fleet_behind WITH (FORCE)")
