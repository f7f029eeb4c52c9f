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
from fleet_core.runtime.paths import RuntimePaths

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
        assert "branch" not in [key for key, _, _ in table.columns_shown]  # optional: `b`
        await pilot.press("b")

        def branches() -> list[str]:
            return [str(table.get_cell(row.key, "branch")) for row in table.ordered_rows]

        table.sort_by("branch")
        assert branches() == sorted(branches()) and branches()[0].startswith("alpha")  # no fleet/
        table.sort_by("branch")  # again: reversed
        assert branches()[0].startswith("beta")
        table.sort_by("description")
        assert str(table.get_cell(table.ordered_rows[0].key, "description")).startswith("alpha")
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


def notices(app: FleetApp) -> list[str]:
    return [n.message for n in app._notifications]


async def test_refused_keys_say_why_in_one_line(app: FleetApp, repo: Path) -> None:
    """A verb that does not apply to the selected task is not offered in the footer, and its
    key gives a one-line notice instead of silence."""
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.source is not None)
        rec = await spawn(app, repo, "wait [demo:hang]")
        assert app.source is not None
        await app.source.conductor.stop(app.actor, str(rec.id))
        screen = screen_of(app)
        table = screen.table
        await pilot_until(
            pilot, lambda: str(rec.id) in table.records
            and table.records[str(rec.id)].status is TaskStatus.CANCELLED,
        )  # fmt: skip
        table.move_cursor(row=table.get_row_index(str(rec.id)))
        await pilot.pause()
        offered = {b.binding.key for b in screen.active_bindings.values() if b.enabled}
        assert {"r", "m", "a", "s"}.isdisjoint(offered) and {"d", "l", "n"} <= offered
        expected = {
            "r": f"only a failed or rejected task can be retried; {rec.short_id} is cancelled",
            "m": f"only a ready task can be merged; {rec.short_id} is cancelled",
            "a": f"{rec.short_id} has no live agent (cancelled): l shows its log and details",
            "s": f"{rec.short_id} is already cancelled: there is nothing to stop",
        }
        for key, text in expected.items():
            await pilot.press(key)
            await pilot_until(pilot, lambda t=text: t in notices(app), f"the notice for {key}")
            assert "\n" not in text
        assert isinstance(app.screen, FleetScreen)  # nothing was opened


async def test_the_cursor_follows_a_task_spawned_from_the_form(app: FleetApp, repo: Path) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.source is not None)
        first = await spawn(app, repo, "alpha [demo:hang]")
        table = screen_of(app).table
        await pilot_until(pilot, lambda: str(first.id) in table.rows)
        table.sort_by("description")  # alpha first, the new one (zeta) last
        table.move_cursor(row=0)
        await pilot.press("n")
        await pilot_until(pilot, lambda: isinstance(app.screen, SpawnForm))
        form = app.screen
        form.query_one("#description").text = "zeta [demo:hang]"
        form.query_one("#repository").value = str(repo)
        form.query_one("#agent").value = "demo"
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot_until(pilot, lambda: isinstance(app.screen, FleetScreen), "the form closed")

        def new_id() -> str | None:
            found = [k for k, r in table.records.items() if r.description.startswith("zeta")]
            return found[0] if found else None

        await pilot_until(pilot, lambda: new_id() is not None and new_id() in table.rows)
        await pilot_until(pilot, lambda: str(table.current_id) == new_id(), "the cursor moved")
        assert table.get_row_index(str(new_id())) == 1  # it sits last: the cursor went there


def test_the_side_panel_keeps_whole_words() -> None:
    """At 160 columns the panel is 38 wide (34 inside): the tiers' full names fit."""
    from fleet_console.widgets.governor_panel import render_overview
    from fleet_core.models import Tier
    from fleet_core.overview import OperatorLoad, Overview

    loads = [OperatorLoad(f"op-{t.value}", t, 1, 3) for t in Tier]
    text = render_overview(Overview(loads, 5, 25, 0)).plain
    for tier in Tier:
        assert f" {tier.value}\n" in text
    assert max(len(line) for line in text.splitlines()) <= 34


async def test_enter_on_an_agent_that_ended_says_so_with_its_log(app: FleetApp, repo: Path) -> None:
    """The table still says running (no monitor here), the agent has ended: Enter does not
    attach to its dead pane, it says why, with the task's state and the end of its log."""
    async with app.run_test(size=SIZE) as pilot:
        await pilot_until(pilot, lambda: app.source is not None)
        rec = await spawn(app, repo, "break it [demo:fail]")
        assert app.source is not None
        runtime = app.source.conductor.runtime
        await eventually(lambda: runtime.exit_status(rec.id))
        table = screen_of(app).table
        await pilot_until(
            pilot, lambda: str(rec.id) in table.records
            and table.records[str(rec.id)].status is TaskStatus.RUNNING,
        )  # fmt: skip
        table.move_cursor(row=table.get_row_index(str(rec.id)))
        table.focus()
        await pilot.press("enter")
        head = f"task {rec.short_id}: nothing to attach to, its agent has ended (exit 1)"
        await pilot_until(pilot, lambda: any(head in n for n in notices(app)), "the refusal")
        text = next(n for n in notices(app) if head in n)
        assert "the task is running" in text
        assert text.splitlines()[-1].endswith("fleet: agent exited with status 1")
        assert isinstance(app.screen, FleetScreen)
