"""The task screen against real components: PostgreSQL, git, tmux, the conductor and the demo
agent, driven through Textual's pilot."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID, uuid4

import pytest
from textual.app import App
from textual.screen import Screen
from textual.widgets import DataTable, Log, Static, TabbedContent

from conftest import eventually, fits, grant_repo, pilot_until
from fleet_console.screens.task import TaskScreen
from fleet_console.source import EngineSource
from fleet_core.conductor import Actor, Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database
from fleet_core.engine import Engine
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import SpawnRequest, TaskRecord, Tier
from fleet_core.monitor import Monitor, ReconcileReport

ALICE = Actor("alice", Tier.SOVEREIGN)
TCSS = Path(__file__).parent.parent / "src" / "fleet_console" / "styles" / "task.tcss"
FROZEN = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
until = functools.partial(pilot_until, timeout=10.0)


@pytest.fixture(autouse=True)
def _colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)


@dataclass
class Fleet:
    conductor: Conductor
    source: EngineSource
    repo: Path

    async def spawn(self, description: str = "say hello") -> TaskRecord:
        req = SpawnRequest.model_validate(
            {
                "description": description,
                "repository": str(self.repo),
                "task_type": "docs",
                "agent_type": "demo",
            }
        )
        rec = (await self.conductor.spawn(ALICE, req)).task
        assert rec is not None
        return rec

    async def finished(self, description: str = "say hello") -> TaskRecord:
        rec = await self.spawn(description)
        await eventually(lambda: self.conductor.runtime.exit_status(rec.id))
        return rec


@pytest.fixture
async def repo(repo: Path, db: Database) -> Path:
    """The sample repository, granted to alice (a spawn names a granted repository)."""
    await grant_repo(db, repo, "alice")
    return repo


@pytest.fixture
async def fleet(tmp_path: Path, db: Database, repo: Path) -> AsyncIterator[Fleet]:
    settings = Settings(
        data_dir=tmp_path / "data",
        host_id="test-host",
        secrets={"FLEET_DEMO_DELAY": "0"},
        kill_grace_seconds=1.0,
        global_cap=None,
    )
    conductor = Conductor.from_settings(settings, db)
    engine = Engine(settings, db, conductor, Monitor(conductor), ReconcileReport([], []))
    try:
        yield Fleet(conductor, EngineSource(engine, ALICE), repo)
    finally:
        await conductor.stop_engine()
        await conductor.runtime.tmux.kill_server()


class Harness(App[None]):
    CSS_PATH = TCSS

    def __init__(self, screen: TaskScreen) -> None:
        super().__init__()
        self.task_screen = screen

    def on_mount(self) -> None:
        self.push_screen(self.task_screen)


def screen_for(fleet: Fleet, task_id: UUID, tab: str = "log") -> TaskScreen:
    return TaskScreen(fleet.source, task_id, tab=tab, clock=lambda: FROZEN)


def header(screen: TaskScreen) -> str:
    return str(screen.query_one("#task-header", Static).content)


def details(screen: TaskScreen) -> str:
    return str(screen.query_one("#details-body", Static).content)


def log_text(screen: TaskScreen) -> str:
    return "\n".join(screen.query_one("#task-log", Log).lines)


def table_rows(screen: TaskScreen, selector: str) -> list[list[str]]:
    table = screen.query_one(selector, DataTable)
    return [[str(cell) for cell in table.get_row(key)] for key in table.rows]


async def test_finished_task_shows_log_details_ci_reviews_and_audit(fleet: Fleet) -> None:
    """The demo agent's output in the log tab; branch, prompt hash, CI, reviews and audit."""
    rec = await fleet.finished()
    screen = screen_for(fleet, rec.id)
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: "[demo] committed" in log_text(screen))
        assert "[demo] read prompt" in log_text(screen) and "[demo] done" in log_text(screen)
        # First the one-line why, then the description and the agent.
        assert header(screen).startswith(f"{rec.short_id}  running\nsay hello  ·  demo/demo")
        assert screen.record is not None and screen.record.prompt_hash
        await pilot.press("2")
        assert screen.active_tab == "details"
        body = details(screen)
        assert rec.branch in body and screen.record.prompt_hash in body
        assert f"tmux session  fleet-{rec.id}" in body and "retries       0/3" in body
        assert "host          test-host" in body and "failure:" not in body
        created = rec.created_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")
        assert f"created       {created}" in body
        await pilot.press("3")
        assert table_rows(screen, "#ci-table") == [["attempt 1 (current)", "ci none yet"]]
        await pilot.press("4")
        assert table_rows(screen, "#reviews-table") == [["review", "none yet"]]
        await pilot.press("5")
        assert screen.active_tab == "audit"
        audit = table_rows(screen, "#audit-table")
        assert [row[1] for row in audit] == ["fleet.secrets_issued"]
        assert audit[0][0].endswith("Z") and len(audit[0][0]) == len("2030-01-01T12:00Z")


async def test_ci_columns_fit_their_content_as_soon_as_it_arrives(fleet: Fleet) -> None:
    """New, longer CI rows are laid out whole on the next render, not after the table's next
    idle pass (a snapshot under load once caught 'ci s' and 'faili')."""
    rec = await fleet.finished()
    screen = screen_for(fleet, rec.id, tab="ci")
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: screen.record is not None)
        table = screen.query_one("#ci-table", DataTable)
        assert fits(table)
        failure = {"reason": "ci_failed", "failing_checks": ["integration-tests-on-postgres"],
                   "ci_url": "https://ci.example/runs/4242/jobs/integration-tests"}  # fmt: skip
        await fleet.conductor.moves.move(
            rec, TaskStatus.FAILED, reason="ci_failed", update={"failure_context": failure}
        )
        await screen.refresh_data()  # renders the new rows; no idle pass in between
        assert table_rows(screen, "#ci-table")[1] == [
            "failing check",
            "integration-tests-on-postgres",
        ]
        assert fits(table)


async def test_stopped_task_shows_cancelled_and_its_audit_row(fleet: Fleet) -> None:
    """conductor.stop: the header says cancelled, the audit has fleet.cancelled, no session."""
    rec = await fleet.spawn("wait [demo:hang]")
    done = await fleet.conductor.stop(ALICE, str(rec.id))
    assert done.status is TaskStatus.CANCELLED
    screen = screen_for(fleet, rec.id, tab="audit")
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: screen.record is not None)
        assert f"{rec.short_id}  cancelled\n" in header(screen)
        await until(pilot, lambda: len(table_rows(screen, "#audit-table")) >= 2)
        audit = table_rows(screen, "#audit-table")
        assert [row[1] for row in audit] == ["fleet.secrets_issued", "fleet.cancelled"]
        assert audit[-1][2].endswith("→ cancelled") and '"by": "alice"' in audit[-1][3]
        assert screen.log_refreshes == 0  # the log tab was never shown
        await pilot.press("1")  # the agent's output is kept past its session
        await until(pilot, lambda: "fleet: starting" in log_text(screen))
        assert "completed" in details(screen) and "(0s ago)" not in details(screen)


async def test_task_whose_session_is_gone_shows_its_kept_log(fleet: Fleet) -> None:
    """The log tab reads the agent's kept output after its tmux session is gone; with no
    output kept either, it explains the missing session instead of failing."""
    rec = await fleet.finished()
    screen = screen_for(fleet, rec.id)
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: "[demo] committed" in log_text(screen))
        assert await fleet.conductor.runtime.tmux.kill_session(rec.tmux_session or "")
        await pilot.press("ctrl+r")
        await pilot.pause(0.2)
        assert "[demo] committed" in log_text(screen)
        fleet.conductor.runtime.forget_logs(rec.id)
        await pilot.press("ctrl+r")
        await until(pilot, lambda: "no agent session" in log_text(screen))
        assert log_text(screen).startswith("no agent session: ")
        assert "[demo]" not in log_text(screen)


async def test_log_polls_only_while_its_tab_is_visible(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Polling runs on the log tab, stops on another tab or under another screen, and an
    unchanged capture is not re-rendered."""
    monkeypatch.setattr(TaskScreen, "POLL_SECONDS", 0.1)
    rec = await fleet.finished()
    screen = screen_for(fleet, rec.id)
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: screen.log_refreshes >= 4)
        assert screen.log_renders == 1  # the capture never changed after the agent ended
        await pilot.press("2")
        await pilot.pause(0.3)
        stopped = screen.log_refreshes
        await pilot.pause(0.6)
        assert screen.log_refreshes == stopped and not screen.polling
        await pilot.press("1")
        await until(pilot, lambda: screen.log_refreshes >= stopped + 3)
        await screen.app.push_screen(Screen())
        await pilot.pause(0.3)
        covered = screen.log_refreshes
        await pilot.pause(0.6)
        assert screen.log_refreshes == covered
        screen.app.pop_screen()
        await until(pilot, lambda: screen.log_refreshes >= covered + 3)


async def test_keys_switch_tabs_refresh_and_go_back(fleet: Fleet) -> None:
    """1-5 switch tabs, r reloads (refresh_data works when called directly), escape pops."""
    rec = await fleet.finished()
    screen = screen_for(fleet, rec.id, tab="details")
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: screen.record is not None)
        tabs = screen.query_one("#task-tabs", TabbedContent)
        for key, tab in zip("54321", ["audit", "reviews", "ci", "details", "log"], strict=True):
            await pilot.press(key)
            assert tabs.active == tab
        await fleet.conductor.stop(ALICE, str(rec.id))
        await screen.refresh_data()
        assert f"{rec.short_id}  cancelled\n" in header(screen)
        assert "[demo] done" in log_text(screen)  # kept past the session
        await pilot.press("escape")
        await pilot.pause()
        assert screen.app.screen is not screen and not screen.is_current


async def test_q_goes_back_too(fleet: Fleet) -> None:
    """q pops the screen like escape."""
    screen = screen_for(fleet, uuid4(), tab="details")
    async with Harness(screen).run_test() as pilot:
        await until(pilot, lambda: screen.gone)
        await pilot.press("q")
        await pilot.pause()
        assert screen.app.screen is not screen


async def test_missing_task_shows_task_gone(fleet: Fleet) -> None:
    """A task that does not exist (or was deleted) says so and stops polling."""
    screen = screen_for(fleet, uuid4())
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: screen.gone)
        assert "task gone" in header(screen) and details(screen) == "task gone"
        assert not screen.polling and screen.log_refreshes == 0
        await pilot.press("ctrl+r")
        await pilot.pause(0.2)
        assert screen.gone and screen.app.screen is screen


async def test_log_follows_the_end_unless_scrolled_up(fleet: Fleet) -> None:
    """A re-render keeps the view at the bottom, or where the operator scrolled to."""
    rec = await fleet.finished()
    screen = screen_for(fleet, rec.id)
    async with Harness(screen).run_test(size=(80, 8)) as pilot:
        await until(pilot, lambda: "[demo] committed" in log_text(screen))
        log = screen.query_one("#task-log", Log)
        await pilot.pause()
        assert log.max_scroll_y > 0 and log.is_vertical_scroll_end
        log.scroll_home(animate=False, immediate=True)
        renders = screen.log_renders
        screen._log_hash = None  # force a re-render of the same capture
        await screen.refresh_data()
        await pilot.pause()
        assert screen.log_renders == renders + 1 and log.scroll_y == 0
        log.scroll_end(animate=False, immediate=True)
        screen._log_hash = None
        await screen.refresh_data()
        await pilot.pause()
        assert screen.log_renders == renders + 2 and log.is_vertical_scroll_end


async def test_the_diff_tab_shows_the_pr_diff_once_there_is_a_pr(fleet: Fleet) -> None:
    """Before the PR: why there is no diff; after it (monitor cycles find the pushed branch
    on the local forge): the PR's diff against its base, read from the forge."""
    rec = await fleet.finished()
    screen = screen_for(fleet, rec.id, tab="diff")
    body = lambda: str(screen.query_one("#diff-body", Static).content)  # noqa: E731
    async with Harness(screen).run_test(size=(120, 36)) as pilot:
        await until(pilot, lambda: "no pull request yet" in body())
        monitor = Monitor(fleet.conductor)
        for _ in range(100):
            await monitor.cycle()
            if (await fleet.conductor.registry(ALICE).get(rec.id)).pr_number:
                break
            await pilot.pause(0.05)
        screen.load()
        await until(pilot, lambda: f"+++ b/fleet-demo/{rec.id}.md" in body())
        assert f"── fleet-demo/{rec.id}.md" in body()
