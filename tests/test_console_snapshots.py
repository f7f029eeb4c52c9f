"""Snapshot tests of the console (pytest-textual-snapshot): the fleet screen, the task screen on
each tab, and the modal screens, against the session's embedded PostgreSQL seeded with fixed
rows and a frozen clock, so every run renders the same SVG.

The engine runs with `background=False` (no monitor, no queue loop) and no agent is started.
Regenerate with `pytest tests/test_console_snapshots.py --snapshot-update`, then look at the
SVGs under `tests/__snapshots__/test_console_snapshots/`."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widgets import DataTable, Input, Log, Static, TextArea

from conftest import fits, pilot_until
from fleet_console.app import FleetApp
from fleet_console.screens.fleet import FleetScreen
from fleet_console.screens.forms import ConfirmDialog, HelpScreen, SpawnForm
from fleet_console.screens.task import TABS, TaskScreen
from fleet_core.config import Settings
from fleet_core.engine import running_engine
from fleet_core.lifecycle import TaskStatus

SIZE = (120, 36)
NOW = datetime(2026, 1, 1, 12, 30, tzinfo=UTC)
SEEDED = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
WAIT_S = 15.0
until = functools.partial(pilot_until, timeout=WAIT_S)
# The master key's fingerprint and what it encrypted (signing keys, secrets) go too: a test
# before may have run an API server with another master key.
TABLES = (
    "fleet_spawn_queue, fleet_audit, fleet_outbox, fleet_notifications, fleet_config, fleet_tasks, "
    "fleet_master_key, fleet_switches, fleet_reviews, fleet_signing_keys, fleet_secrets"
)
AGENTS = [
    ("claude_code", "claude-sonnet-4"),
    ("codex", "gpt-5-codex"),
    ("gemini", "gemini-2.5-pro"),
    ("aider", "deepseek-chat"),
    ("demo", "demo-1"),
]
TASK_TYPES = ["bug_fix", "feature", "refactor", "docs", "review"]
# One task per status, newest first: (status, branch, description, pr, ci, retries).
TASKS: list[tuple[str, str, str, int | None, str | None, int]] = [
    ("proposed", "fleet/add-rate-limiter", "add a rate limiter to the API", None, None, 0),
    ("spawning", "fleet/docs-quickstart", "write the quickstart guide", None, None, 0),
    ("running", "fleet/refactor-registry", "split the registry module", None, None, 0),
    ("pr_created", "fleet/fix-login-redirect", "fix the login redirect loop", 101, "pending", 0),
    ("reviewing", "fleet/cache-warmup", "warm the cache on start", 102, "passing", 0),
    ("ready", "fleet/bump-deps", "bump the pinned dependencies", 103, "passing", 0),
    ("merged", "fleet/typo-readme", "fix typos in the README", 104, "passing", 0),
    ("failed", "fleet/parse-dates", "parse ISO dates in the importer", 105, "failing", 1),
    ("retrying", "fleet/flaky-upload", "retry the upload that failed", None, None, 2),
    ("abandoned", "fleet/migrate-orm", "migrate to the new ORM", None, None, 3),
    ("rejected", "fleet/drop-python-39", "drop Python 3.9 support", 106, "passing", 0),
    ("cancelled", "fleet/dark-mode", "add a dark mode", None, None, 0),
]
FAILED = TASKS.index(next(t for t in TASKS if t[0] == "failed"))
RUNNING = TASKS.index(next(t for t in TASKS if t[0] == "running"))
FAILURE_CONTEXT: dict[str, Any] = {
    "reason": "ci_failed",
    "previous_status": "ready",
    "attempt": 2,
    "prompt_budget": 12000,
    "at": "2026-01-01T12:20:00+00:00",
    "failing_checks": ["test (3.12)", "lint"],
    "ci_url": "https://ci.example.invalid/runs/4711",
    "ci_log": "collected 212 items\n"
    "tests/test_importer.py::test_iso_dates FAILED\n"
    "E   ValueError: Invalid isoformat string: '2026-01-01Z'\n"
    "1 failed, 211 passed in 9.81s",
    "attempts": [
        {
            "attempt": 1,
            "reason": "agent_exited",
            "cause": "the agent exited with code 1",
            "at": "2026-01-01T11:50:00+00:00",
        },
        {
            "attempt": 2,
            "reason": "ci_failed",
            "cause": "CI failed (test (3.12), lint)",
            "at": "2026-01-01T12:20:00+00:00",
        },
    ],
}
ABANDONED = TASKS.index(next(t for t in TASKS if t[0] == "abandoned"))
# Timed out on each of its 4 attempts (3 retries), then abandoned.
ABANDONED_CONTEXT: dict[str, Any] = {
    "reason": "timeout",
    "timeout_minutes": 120,
    "prompt_budget": 6000,
    "at": "2026-01-01T11:40:00+00:00",
    "log_tail": "applying migration 0042\nwaiting for the lock on table orders ...",
    "diff": "diff --git a/orm/models.py b/orm/models.py\n+from sqlalchemy import Column\n",
    "attempts": [
        {
            "attempt": n,
            "reason": "timeout",
            "cause": "timed out after 120 min",
            "at": f"2026-01-01T0{n + 3}:00:00+00:00",
        }
        for n in range(1, 5)
    ],
}
REVIEW_STATUS = {"state": "done", "verdict": "timed_out", "approvals": 2, "attempt": 2,
                 "expected": 3, "done": 3, "head_sha": "c0ffee02" * 5,
                 "warning": "review_timed_out",
                 "dod": {"ok": False, "items": [
                     {"name": "pr", "ok": True, "detail": "#105"},
                     {"name": "synced", "ok": False, "detail": "conflicts with main"},
                     {"name": "ci", "ok": True, "detail": "passing"},
                     {"name": "reviews", "ok": True, "detail": "timed out"}]}}  # fmt: skip
REVIEWING_STATUS = {"state": "running", "expected": 3, "done": 2, "attempt": 1,
                    "head_sha": "c0ffee01" * 5}  # fmt: skip
# The failed task's verdicts: (attempt, reviewer, kind, model, verdict, summary, comments,
# error, duration_ms, cost_usd)
REVIEWS: list[tuple[int, str, str, str, str, str, list[dict[str, Any]], str | None, int, Any]] = [
    (1, "security", "anthropic", "claude-sonnet-4-5", "request_changes",
     "The importer trusts the date string.",
     [{"path": "importer/dates.py", "line": 12, "body": "validate before parsing"}],
     None, 8200, None),
    (1, "logic", "anthropic", "claude-sonnet-4-5", "approve", "Parsing is correct.", [],
     None, 6100, None),
    (1, "architecture", "anthropic", "claude-sonnet-4-5", "approve", "Fits the module.", [],
     None, 5900, None),
    (2, "security", "claude_code", "sonnet", "approve", "Input is validated now.", [], None,
     30500, 0.0125),
    (2, "logic", "claude_code", "sonnet", "approve", "Edge cases are covered.", [], None,
     28000, 0.0119),
    (2, "architecture", "claude_code", "sonnet", "comment",
     "no answer before the review's deadline", [], "timed out", None, None),
]  # fmt: skip
# (minutes after SEEDED - FAILED minutes, event, from, to, detail)
AUDIT: list[tuple[int, str, str | None, str | None, dict[str, Any]]] = [
    (0, "fleet.spawned", "proposed", "spawning", {"agent": "claude_code"}),
    (1, "fleet.secrets_issued", None, None, {"names": ["ANTHROPIC_API_KEY"]}),
    (2, "fleet.started", "spawning", "running", {"tmux": "fleet-5eed0008"}),
    (9, "fleet.pr_created", "running", "pr_created", {"pr": 105}),
    (15, "fleet.ready", "reviewing", "ready", {"review": "skipped"}),
    (27, "fleet.failed", "ready", "failed", {"reason": "ci_failed", "checks": 2}),
]


def task_id(i: int) -> uuid.UUID:
    """Fixed ids whose short form differs per task: 5eed0001-..., 5eed0002-..."""
    return uuid.UUID(int=((0x5EED0000 + i + 1) << 96) | (i + 1))


@pytest.fixture(autouse=True)
def _stable(monkeypatch: pytest.MonkeyPatch) -> None:
    """Colour on (NO_COLOR breaks snapshots), and `gh` absent whatever this machine has, so the
    governor panel's forge line is the same everywhere (nothing here calls gh)."""
    monkeypatch.delenv("NO_COLOR", raising=False)


@dataclass
class Seeded:
    settings: Settings
    count: int
    settings_dsn: str = ""  # the superuser's, to seed more

    def app(self) -> FleetApp:
        settings = self.settings
        return FleetApp(
            settings,
            engine=lambda bus: running_engine(settings, bus=bus, background=False),
            clock=lambda: NOW,
        )


async def _seed(dsn: str, count: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(f"TRUNCATE {TABLES} RESTART IDENTITY CASCADE")
        for i, (status, branch, description, pr, ci, retries) in enumerate(TASKS[:count]):
            agent, model = AGENTS[i % len(AGENTS)]
            created = SEEDED - timedelta(minutes=i)
            started = status not in ("proposed", "cancelled")
            failed = status == "failed"
            finished = status in ("merged", "abandoned", "rejected", "cancelled")
            await conn.execute(
                """INSERT INTO fleet_tasks
                   (id, operator_id, agent_type, model, task_type, description, branch,
                    repository, base_branch, worktree_path, tmux_session, host_id, status,
                    version, pr_number, ci_status, review_status, retry_count, max_retries,
                    timeout_minutes, prompt_hash, failure_context, spawned_at, completed_at,
                    created_at, updated_at)
                   VALUES ($1, 'alice', $2, $3, $4, $5, $6, '/srv/repos/shop', 'main', $7, $8,
                           'snapshot-host', $9, $10, $11, $12, $13::jsonb, $14, 3, 120, $15,
                           $16::jsonb, $17, $18, $19, $20)""",
                task_id(i),
                agent,
                model,
                TASK_TYPES[i % len(TASK_TYPES)],
                description,
                branch,
                f"/srv/worktrees/{task_id(i).hex[:8]}" if started else None,
                # The failed task has no tmux session: its log tab says so.
                f"fleet-{task_id(i).hex[:8]}" if started and not failed else None,
                status,
                3 + i,
                pr,
                ci,
                json.dumps(REVIEW_STATUS)
                if status in ("ready", "failed")
                else json.dumps(REVIEWING_STATUS)
                if status == "reviewing"
                else None,
                retries,
                f"sha256:{i:02d}c0ffee" if started else None,
                json.dumps(FAILURE_CONTEXT if failed else ABANDONED_CONTEXT)
                if failed or status == "abandoned"
                else None,
                created + timedelta(seconds=20) if started else None,
                created + timedelta(minutes=25) if finished else None,
                created,
                created + timedelta(minutes=27 if failed else 5),
            )
        if count > FAILED:
            base = SEEDED - timedelta(minutes=FAILED)
            for n, (attempt, reviewer, kind, model, verdict, summary, comments, error, took,
                    cost) in enumerate(REVIEWS):  # fmt: skip
                await conn.execute(
                    """INSERT INTO fleet_reviews
                       (task_id, operator_id, attempt, head_sha, reviewer, kind, model, verdict,
                        summary, comments, error, duration_ms, cost_usd, created_at)
                       VALUES ($1, 'alice', $2, $3, $4, $5, $6, $7, $8, $9::jsonb, $10, $11,
                               $12, $13)""",
                    task_id(FAILED), attempt, f"c0ffee0{attempt}" * 5, reviewer, kind, model,
                    verdict, summary, json.dumps(comments), error, took, cost,
                    base + timedelta(minutes=10 + n),
                )  # fmt: skip
            for minutes, event, before, after, detail in AUDIT:
                await conn.execute(
                    """INSERT INTO fleet_audit
                       (task_id, operator_id, event_type, from_status, to_status, detail,
                        created_at)
                       VALUES ($1, 'alice', $2, $3, $4, $5::jsonb, $6)""",
                    task_id(FAILED),
                    event,
                    before,
                    after,
                    json.dumps(detail),
                    base + timedelta(minutes=minutes),
                )
    finally:
        await conn.close()


def _seeded(pg: Any, count: int) -> Seeded:
    asyncio.run(_seed(pg.superuser_dsn, count))
    settings = Settings(
        data_dir=pg.settings.data_dir,
        operator="alice",
        tier="sovereign",
        host_id="snapshot-host",
        global_cap=25,
        gh="/nonexistent/gh",  # the same "gh is not installed" line on every machine
    )
    return Seeded(settings, count, pg.superuser_dsn)


@pytest.fixture
def empty(pg: Any) -> Seeded:
    return _seeded(pg, 0)


@pytest.fixture
def fleet(pg: Any) -> Seeded:
    return _seeded(pg, len(TASKS))


async def fleet_loaded(pilot: Pilot[Any], rows: int) -> FleetScreen:
    """The engine is up, the table holds `rows` tasks, the governor panel and status are in."""
    app = pilot.app
    assert isinstance(app, FleetApp)

    def ready() -> bool:
        screen = app.screen
        return (
            app.source is not None
            and isinstance(screen, FleetScreen)
            and screen.table.row_count >= rows
            and len(screen.table.records) >= rows
            and str(screen.panel.content).startswith("Slots")
            and str(screen.status.content) == f"{rows} tasks"
        )

    await until(pilot, ready, f"{rows} tasks on the fleet screen")
    screen = app.screen
    assert isinstance(screen, FleetScreen)
    return screen


def loaded(rows: int) -> Callable[[Pilot[Any]], Awaitable[None]]:
    async def run_before(pilot: Pilot[Any]) -> None:
        await fleet_loaded(pilot, rows)

    return run_before


def no_blink(screen: Any) -> None:
    """A blinking cursor would flip between runs."""
    for widget in screen.query(Input):
        widget.cursor_blink = False
    for area in screen.query(TextArea):
        area.cursor_blink = False


def test_fleet_empty(snap_compare: Any, empty: Seeded) -> None:
    """No tasks: the empty table, the governor panel with alice at 0 slots, '0 tasks'."""
    assert snap_compare(empty.app(), terminal_size=SIZE, run_before=loaded(0))


def test_fleet_every_status(snap_compare: Any, fleet: Seeded) -> None:
    """Twelve tasks, one in every status, newest first; the panel counts the slot holders."""
    assert snap_compare(fleet.app(), terminal_size=SIZE, run_before=loaded(fleet.count))


def test_fleet_filtered(snap_compare: Any, fleet: Seeded) -> None:
    """`/` then 'fail' then enter: only the tasks mentioning 'fail' remain, the filter box stays
    visible and the status line names the filter (after a reload, its steady state)."""

    async def run_before(pilot: Pilot[Any]) -> None:
        screen = await fleet_loaded(pilot, fleet.count)
        no_blink(screen)
        await pilot.press("slash", *"fail", "enter")
        await until(pilot, lambda: screen.table.row_count == 2, "the filter")
        await screen.reload().wait()  # the periodic reload rewrites the status line
        await pilot.pause()

    assert snap_compare(fleet.app(), terminal_size=SIZE, run_before=run_before)


@pytest.mark.parametrize("tab", TABS)
def test_task_screen(snap_compare: Any, fleet: Seeded, tab: str) -> None:
    """The failed task (failure context, review status, audit trail, no tmux session) on each
    tab of the task screen, opened with `open_task(task_id, tab)`."""
    audit_rows = len(AUDIT)

    async def run_before(pilot: Pilot[Any]) -> None:
        await fleet_loaded(pilot, fleet.count)
        app = pilot.app
        assert isinstance(app, FleetApp)
        app.open_task(task_id(FAILED), tab)

        def ready() -> bool:
            screen = app.screen
            if not isinstance(screen, TaskScreen) or screen.record is None:
                return False
            if screen.query_one("#audit-table", DataTable).row_count < audit_rows:
                return False
            if tab == "log":
                return screen.log_renders >= 1 and screen.query_one(Log).line_count >= 1
            if tab in ("ci", "reviews"):  # the failure's rows are there, each shown whole
                table = screen.query_one(f"#{tab}-table", DataTable)
                if table.row_count < 2 or not fits(table):
                    return False
            return screen.active_tab == tab

        await until(pilot, ready, f"the task screen on {tab}")

    assert snap_compare(fleet.app(), terminal_size=SIZE, run_before=run_before)


def test_spawn_form_error(snap_compare: Any, fleet: Seeded) -> None:
    """`n` opens the spawn form; base branch '-x' fails local validation and the error shows
    under the field (the form stays open, nothing is spawned)."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await fleet_loaded(pilot, fleet.count)
        app = pilot.app
        await pilot.press("n")
        await until(pilot, lambda: isinstance(app.screen, SpawnForm), "the spawn form")
        form = app.screen
        assert isinstance(form, SpawnForm)
        no_blink(form)
        form.query_one("#description", TextArea).text = "add a health endpoint"
        form.query_one("#repository", Input).value = "/tmp"  # not the cwd: stable
        form.query_one("#base-branch", Input).value = "-x"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await until(
            pilot,
            lambda: form.query_one("#error-base-branch").has_class("-shown"),
            "the base branch error",
        )

    assert snap_compare(fleet.app(), terminal_size=SIZE, run_before=run_before)


def test_help(snap_compare: Any, fleet: Seeded) -> None:
    """`?` shows the keys over the loaded fleet screen."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await fleet_loaded(pilot, fleet.count)
        await pilot.press("question_mark")
        await until(pilot, lambda: isinstance(pilot.app.screen, HelpScreen), "the help")

    assert snap_compare(fleet.app(), terminal_size=SIZE, run_before=run_before)


def test_confirm_stop(snap_compare: Any, fleet: Seeded) -> None:
    """The running task selected, `s` asks to confirm the stop (nothing is stopped)."""

    async def run_before(pilot: Pilot[Any]) -> None:
        screen = await fleet_loaded(pilot, fleet.count)
        await pilot.press(*["down"] * RUNNING)
        selected = screen.selected()
        assert selected is not None and selected.status is TaskStatus.RUNNING
        await pilot.press("s")
        await until(pilot, lambda: isinstance(pilot.app.screen, ConfirmDialog), "the dialog")

    assert snap_compare(fleet.app(), terminal_size=SIZE, run_before=run_before)


def test_fleet_needs_you(snap_compare: Any, fleet: Seeded) -> None:
    """The header line counts what needs the operator (1 ready to merge, 2 failed for good
    (abandoned and rejected), 0 stalled, 0 queued) and says the fleet is paused; `2` filters
    the table to the two failed for good (its count shown reversed)."""

    async def run_before(pilot: Pilot[Any]) -> None:
        screen = await fleet_loaded(pilot, fleet.count)
        await until(pilot, lambda: screen.overview is not None, "the overview")
        await pilot.press("2")
        await until(pilot, lambda: screen.table.row_count == 2, "the failed-for-good filter")
        await pilot.pause()

    async def paused(dsn: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("INSERT INTO fleet_switches (name, set_by, reason, set_at) "
                               "VALUES ('paused', 'root', 'disk full', $1)", SEEDED)  # fmt: skip
        finally:
            await conn.close()

    asyncio.run(paused(fleet.settings_dsn))
    assert snap_compare(fleet.app(), terminal_size=SIZE, run_before=run_before)


def test_task_why_first(snap_compare: Any, fleet: Seeded) -> None:
    """The abandoned task's details: the one-line why first ("timed out after 120 min;
    retried 3 times; abandoned"), the failure's fields, every attempt, then the log tail and
    the diff each in a section of its own (no JSON)."""

    async def run_before(pilot: Pilot[Any]) -> None:
        await fleet_loaded(pilot, fleet.count)
        app = pilot.app
        assert isinstance(app, FleetApp)
        app.open_task(task_id(ABANDONED), "details")

        def ready() -> bool:
            screen = app.screen
            return (isinstance(screen, TaskScreen) and screen.record is not None
                    and screen.active_tab == "details")  # fmt: skip

        await until(pilot, ready, "the details tab")

    assert snap_compare(fleet.app(), terminal_size=SIZE, run_before=run_before)


DIFF = """diff --git a/importer/dates.py b/importer/dates.py
index 1a2b3c4..5d6e7f8 100644
--- a/importer/dates.py
+++ b/importer/dates.py
@@ -10,4 +10,6 @@ from datetime import datetime
 def parse(text):
-    return datetime.strptime(text, "%Y-%m-%d")
+    if not ISO.match(text):
+        raise ValueError(text)
+    return datetime.fromisoformat(text)
 # the end
diff --git a/tests/test_dates.py b/tests/test_dates.py
new file mode 100644
--- /dev/null
+++ b/tests/test_dates.py
@@ -0,0 +1,2 @@
+def test_iso():
+    assert parse("2026-01-01").year == 2026
"""


class DiffApp(App[None]):
    """The Diff tab's content alone: the diff of the seeded failed task with the newest
    attempt's line comments (an older attempt's comment is not shown)."""

    def compose(self) -> ComposeResult:
        from fleet_console.widgets.diff_view import render_diff
        from fleet_core.review.store import ReviewRow

        rows = [
            ReviewRow("security", "anthropic", "m", "request_changes", "trusts input",
                      [{"path": "importer/dates.py", "line": 11, "body": "validate first"}],
                      attempt=2),
            ReviewRow("logic", "anthropic", "m", "comment", "",
                      [{"path": "tests/test_dates.py", "line": 2, "body": "test a bad date"}],
                      attempt=2),
            ReviewRow("logic", "anthropic", "m", "request_changes", "",
                      [{"path": "importer/dates.py", "line": 10, "body": "old"}], attempt=1),
        ]  # fmt: skip
        yield Static(render_diff(DIFF, rows))


def test_diff_tab_content(snap_compare: Any) -> None:
    assert snap_compare(DiffApp(), terminal_size=(90, 24))
