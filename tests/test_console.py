"""The console driven by Textual's pilot against the real engine (PostgreSQL, git, tmux, the
demo agent): keys act on the database and the agents, errors show on the form's field, and an
engine event updates exactly the one row it concerns."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from conftest import Pg, eventually, pilot_until
from fleet_console.app import FleetApp
from fleet_console.screens.fleet import FleetScreen
from fleet_console.screens.forms import ConfirmDialog, SpawnForm
from fleet_core.config import Settings
from fleet_core.engine import running_engine
from fleet_core.lifecycle import TaskStatus
from fleet_core.local_spawn import spawn_local
from fleet_core.models import SpawnRequest
from fleet_core.runtime.local import RuntimePaths

SIZE = (140, 40)


@pytest.fixture(autouse=True)
def _color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)


@pytest.fixture(autouse=True)
def _empty(su: asyncpg.Connection) -> None:
    """Every test starts from empty tables (the `su` fixture truncates them)."""


@pytest.fixture
def settings(pg: Pg, tmp_path: Path) -> Settings:
    return Settings(
        data_dir=pg.settings.data_dir,
        worktree_dir=tmp_path / "worktrees",
        operator="alice",
        host_id="console-host",
        secrets={"FLEET_DEMO_DELAY": "0"},
        kill_grace_seconds=0.5,
    )


@pytest.fixture
def app(settings: Settings) -> Any:
    made = FleetApp(
        settings, engine=lambda bus: running_engine(settings, bus=bus, background=False)
    )
    yield made
    sock = RuntimePaths.from_settings(settings).tmux_socket
    import subprocess

    subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True)


def screen_of(app: FleetApp) -> FleetScreen:
    assert isinstance(app.screen, FleetScreen)
    return app.screen


async def spawn(app: FleetApp, repo: Path, description: str) -> Any:
    assert app.source is not None
    request = SpawnRequest(
        description=description, repository=str(repo), task_type="docs", agent_type="demo"
    )
    out, _registered = await spawn_local(app.source.conductor, app.actor, request)
    return out.task


async def test_s_on_a_running_task_cancels_it_and_its_session_is_gone(
    app: FleetApp, repo: Path, su: asyncpg.Connection
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.source is not None)
        rec = await spawn(app, repo, "wait [demo:hang]")
        table = screen_of(app).table
        await pilot_until(pilot, lambda: str(rec.id) in table.rows)
        table.move_cursor(row=table.get_row_index(str(rec.id)))
        await pilot.press("s")
        await pilot_until(pilot, lambda: isinstance(app.screen, ConfirmDialog))
        await pilot.press("y")
        await pilot_until(pilot, lambda: table.records[str(rec.id)].status is TaskStatus.CANCELLED)
        status = await su.fetchval("SELECT status FROM fleet_tasks WHERE id = $1", rec.id)
        assert status == "cancelled"
        assert app.source is not None
        assert await app.source.conductor.runtime.tmux.pane(rec.tmux_session) is None


async def test_n_with_a_bad_branch_shows_the_error_and_writes_nothing(
    app: FleetApp, repo: Path, su: asyncpg.Connection
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.source is not None)
        await pilot.press("n")
        await pilot_until(pilot, lambda: isinstance(app.screen, SpawnForm))
        form = app.screen
        form.query_one("#description").text = "do something"
        form.query_one("#repository").value = str(repo)
        form.query_one("#base-branch").value = "-x"  # refused by the form itself
        await pilot.pause()
        await pilot.click("#spawn")
        error = form.query_one("#error-base-branch")
        await pilot_until(pilot, lambda: error.display and "-x" in str(error.render()))
        form.query_one("#base-branch").value = "no-such-branch"  # refused by the engine
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot_until(pilot, lambda: "not a branch" in str(error.render()))
        assert app.screen is form  # still open, still editable
        assert await su.fetchval("SELECT count(*) FROM fleet_tasks") == 0
        assert await su.fetchval("SELECT count(*) FROM fleet_spawn_queue") == 0
        assert await su.fetchval("SELECT count(*) FROM fleet_repositories") == 0
        await pilot.press("escape")
        await pilot_until(pilot, lambda: isinstance(app.screen, FleetScreen))


async def test_the_spawn_form_starts_an_agent(
    app: FleetApp, repo: Path, su: asyncpg.Connection
) -> None:
    """The local operator's repository is registered for them on first use, then named."""
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.source is not None)
        await pilot.press("n")
        await pilot_until(pilot, lambda: isinstance(app.screen, SpawnForm))
        form = app.screen
        form.query_one("#description").text = "write the docs"
        form.query_one("#repository").value = str(repo)
        form.query_one("#agent").value = "demo"
        await pilot.click("#spawn")
        await pilot_until(pilot, lambda: isinstance(app.screen, FleetScreen))
        table = screen_of(app).table
        await pilot_until(pilot, lambda: table.row_count == 1)
        (rec,) = table.records.values()
        assert rec.description == "write the docs" and rec.agent_type.value == "demo"
        rows = await su.fetch("SELECT r.name, g.operator_id FROM fleet_repositories r "
                              "JOIN fleet_repository_grants g ON g.repository_id = r.id")  # fmt: skip
        assert [tuple(r) for r in rows] == [("repo", "alice")]
        await pilot.press("n")  # now by its name
        await pilot_until(pilot, lambda: isinstance(app.screen, SpawnForm))
        form = app.screen
        form.query_one("#description").text = "and the changelog"
        form.query_one("#repository").value = "repo"
        form.query_one("#agent").value = "demo"
        await pilot.press("ctrl+s")
        await pilot_until(pilot, lambda: table.row_count == 2)
        await pilot.press("n")  # a name that is not granted: the error shows on the field
        await pilot_until(pilot, lambda: isinstance(app.screen, SpawnForm))
        form = app.screen
        form.query_one("#description").text = "elsewhere"
        form.query_one("#repository").value = "nope"
        await pilot.press("ctrl+s")
        error = form.query_one("#error-repository")
        await pilot_until(pilot, lambda: "no repository named 'nope'" in str(error.render()))
        assert await su.fetchval("SELECT count(*) FROM fleet_tasks") == 2


async def test_an_engine_event_updates_exactly_one_row(app: FleetApp, repo: Path) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.source is not None)
        recs = [await spawn(app, repo, f"wait {i} [demo:hang]") for i in range(3)]
        table = screen_of(app).table
        await pilot_until(pilot, lambda: table.row_count == 3)
        await pilot.pause(0.5)  # let the spawn events settle
        before = {key: [table.get_cell(key, c) for c in ("status", "ci")] for key in table.rows}
        table.updated_rows.clear()
        assert app.source is not None
        target = recs[1]
        await app.source.conductor.moves.move(target, TaskStatus.PR_CREATED, reason="test",
                                              update={"pr_number": 7})  # fmt: skip
        await pilot_until(
            pilot, lambda: table.records[str(target.id)].status is TaskStatus.PR_CREATED
        )
        assert set(table.updated_rows) == {str(target.id)}
        for key in table.rows:
            now = [table.get_cell(key, c) for c in ("status", "ci")]
            assert (now == before[key]) is (str(key.value) != str(target.id))
        assert table.get_cell(str(target.id), "pr") == "#7"


async def test_filter_and_help(app: FleetApp, repo: Path) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.source is not None)
        await spawn(app, repo, "alpha [demo:hang]")
        await spawn(app, repo, "beta [demo:hang]")
        table = screen_of(app).table
        await pilot_until(pilot, lambda: table.row_count == 2)
        await pilot.press("slash")
        await pilot_until(pilot, lambda: app.focused is screen_of(app).filter_box)
        await pilot.press(*"beta", "enter")
        await pilot_until(pilot, lambda: table.row_count == 1)
        await pilot.press("escape")
        await pilot_until(pilot, lambda: table.row_count == 2)

        def branches() -> list[str]:
            return [str(table.get_cell(row.key, "branch")) for row in table.ordered_rows]

        table.sort_by("branch")
        assert branches() == sorted(branches()) and branches()[0].startswith("fleet/alpha")
        table.sort_by("branch")  # again: reversed
        assert branches()[0].startswith("fleet/beta")
        await pilot.press("question_mark")
        await pilot_until(pilot, lambda: type(app.screen).__name__ == "HelpScreen")
        await pilot.press("escape")
        await pilot_until(pilot, lambda: isinstance(app.screen, FleetScreen))


async def test_quitting_stops_the_engine_and_leaves_agents_running(
    app: FleetApp, repo: Path
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.source is not None)
        rec = await spawn(app, repo, "keep going [demo:hang]")
        runtime = app.source.conductor.runtime
        await pilot.press("q")

    async def left() -> bool:
        return app.source is None  # the engine's context was left

    await eventually(left)
    assert await runtime.is_alive(rec.id)
