"""Pilot tests of the modal screens in fleet_console.screens.forms."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
from textual.app import App, ComposeResult
from textual.screen import Screen
from textual.widgets import Button, Checkbox, DataTable, Input, Select, Static, TextArea

from conftest import pilot_until
from fleet_console.screens.forms import ConfirmDialog, HelpScreen, SpawnForm, SpawnFormResult
from fleet_core.models import AgentType, TaskType

CSS = Path(__file__).parents[1] / "src" / "fleet_console" / "styles" / "forms.tcss"
SIZE = (100, 40)
until = functools.partial(pilot_until, what="the form", timeout=10.0)


@pytest.fixture(autouse=True)
def _colour(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)


class Host(App[None]):
    """Pushes one screen and records what it returns and what it posts."""

    CSS_PATH = CSS

    def __init__(self, screen: Screen[Any]) -> None:
        super().__init__()
        self.to_push = screen
        self.results: list[Any] = []
        self.submitted: list[SpawnForm.Submitted] = []

    def compose(self) -> ComposeResult:
        yield Static("host")

    def on_mount(self) -> None:
        self.push_screen(self.to_push, self.results.append)

    def on_spawn_form_submitted(self, event: SpawnForm.Submitted) -> None:
        self.submitted.append(event)


def _fill(form: SpawnForm, **values: str) -> None:
    for widget_id, value in values.items():
        widget = form.query_one(f"#{widget_id}")
        if isinstance(widget, TextArea):
            widget.text = value
        elif isinstance(widget, Input | Select):
            widget.value = value


def _error(form: SpawnForm, widget_id: str) -> str:
    line = form.query_one(f"#error-{widget_id}", Static)
    return str(line.render()) if line.display else ""


def _shown(form: SpawnForm) -> dict[str, str]:
    return {
        str(line.id).removeprefix("error-"): str(line.render())
        for line in form.query(".error").results(Static)
        if line.display
    }


async def test_spawn_form_submits_a_valid_result(tmp_path: Path) -> None:
    form = SpawnForm(str(tmp_path), agents=["claude_code", "codex"])
    app = Host(form)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.click("#description")
        await pilot.press(*"fix the login bug")
        _fill(form, **{"task-type": "bug_fix", "agent": "codex", "base-branch": "main"})
        _fill(form, model="gpt-5", **{"max-retries": "5", "timeout": "60"})
        form.query_one("#runtime", Select).value = "container"
        form.query_one("#queue", Checkbox).value = True
        await pilot.pause()
        assert form.query_one("#repository", Input).value == str(tmp_path)
        await pilot.click("#spawn")
        await until(pilot, lambda: len(app.submitted) == 1)
        assert _shown(form) == {}
        event = app.submitted[0]
        assert event.form is form
        result = event.result
        assert isinstance(result, SpawnFormResult)
        assert result.queue is True
        req = result.request
        assert req.description == "fix the login bug"
        assert req.repository == str(tmp_path)
        assert req.task_type is TaskType.BUG_FIX
        assert req.agent_type is AgentType.CODEX
        assert (req.model, req.base_branch) == ("gpt-5", "main")
        assert (req.max_retries, req.timeout_minutes) == (5, 60)
        assert req.runtime == "container"
        # The form stays open until the app dismisses it; repeated submits are ignored.
        assert app.screen is form and app.results == []
        assert form.query_one("#spawn", Button).disabled
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert len(app.submitted) == 1
        form.dismiss(result)
        await pilot.pause()
        assert app.results == [result]
        assert app.screen is not form


async def test_spawn_form_defaults(tmp_path: Path) -> None:
    form = SpawnForm(str(tmp_path))
    app = Host(form)
    async with app.run_test(size=SIZE) as pilot:
        _fill(form, description="write docs")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert len(app.submitted) == 1
        result = app.submitted[0].result
        assert result.queue is False
        req = result.request
        assert req.task_type is TaskType.FEATURE
        assert req.agent_type is None
        assert req.model is None and req.base_branch is None
        assert (req.max_retries, req.timeout_minutes) == (3, 120)
        assert req.runtime is None  # the agent type's, the repository's or the global setting


async def test_enter_in_last_field_submits(tmp_path: Path) -> None:
    form = SpawnForm(str(tmp_path))
    app = Host(form)
    async with app.run_test(size=SIZE) as pilot:
        _fill(form, description="x")
        form.query_one("#timeout", Input).focus()
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert len(app.submitted) == 1


@pytest.mark.parametrize(
    ("values", "field", "fragment"),
    [
        ({"description": "   "}, "description", "required"),
        ({"max-retries": "11"}, "max-retries", "less than or equal to 10"),
        ({"timeout": "1"}, "timeout", "greater than or equal to 5"),
        ({"repository": "relative/path"}, "repository", "absolute path"),
        ({"repository": "/no/such/dir"}, "repository", "existing directory"),
        ({"base-branch": "-x"}, "base-branch", "must not start with '-'"),
        ({"model": "--yolo"}, "model", "not starting with '-'"),
    ],
)
async def test_spawn_form_shows_errors_under_the_field(
    tmp_path: Path, values: dict[str, str], field: str, fragment: str
) -> None:
    form = SpawnForm(str(tmp_path))
    app = Host(form)
    async with app.run_test(size=SIZE) as pilot:
        _fill(form, **({"description": "do it"} | values))
        await pilot.pause()
        await pilot.press("ctrl+s")  # the keyboard path: no click on a shifting layout
        await until(pilot, lambda: bool(_shown(form)))
        shown = _shown(form)
        assert list(shown) == [field]
        assert fragment in shown[field]
        assert app.submitted == [] and app.results == []
        assert app.screen is form
        assert form.query_one(f"#{field}").has_focus
        # Fixing the field clears its error and the form submits.
        _fill(
            form, **{"description": "do it", field: str(tmp_path) if field == "repository" else "5"}
        )
        await pilot.pause()
        assert _error(form, field) == ""
        await pilot.press("ctrl+s")  # the keyboard path: no click on a shifting layout
        await until(pilot, lambda: len(app.submitted) == 1)


async def test_spawn_form_shows_several_errors_at_once(tmp_path: Path) -> None:
    form = SpawnForm("")
    app = Host(form)
    async with app.run_test(size=SIZE) as pilot:
        _fill(form, **{"max-retries": "", "base-branch": "a..b"})
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert set(_shown(form)) == {"description", "repository", "max-retries", "base-branch"}
        assert app.submitted == []


async def test_show_error_from_the_engine(tmp_path: Path) -> None:
    form = SpawnForm(str(tmp_path))
    app = Host(form)
    async with app.run_test(size=SIZE) as pilot:
        _fill(form, description="x", **{"base-branch": "nope"})
        await pilot.pause()
        await pilot.press("ctrl+s")
        await pilot.pause()
        assert len(app.submitted) == 1
        form.show_error("base_branch", "'nope' is not a branch")
        await pilot.pause()
        assert _shown(form) == {"base-branch": "'nope' is not a branch"}
        assert form.query_one("#base-branch", Input).has_focus
        assert not form.query_one("#spawn", Button).disabled
        assert app.screen is form
        # An error for a field the form lacks goes to the form-level line.
        form.show_error("context_overrides", "too many")
        await pilot.pause()
        assert _error(form, "form") == "context_overrides: too many"
        # The operator fixes it and submits again.
        _fill(form, **{"base-branch": "main"})
        await pilot.pause()
        await pilot.press("ctrl+s")  # the keyboard path: no click on a shifting layout
        await until(pilot, lambda: len(app.submitted) == 2)
        assert _shown(form) == {}


@pytest.mark.parametrize("how", ["escape", "button"])
async def test_spawn_form_cancel_returns_none(tmp_path: Path, how: str) -> None:
    form = SpawnForm(str(tmp_path))
    app = Host(form)
    async with app.run_test(size=SIZE) as pilot:
        _fill(form, description="never mind")
        await pilot.pause()
        if how == "escape":
            await pilot.press("escape")
        else:
            await pilot.click("#cancel")
        await pilot.pause()
        assert app.results == [None]
        assert app.submitted == []


async def test_agent_choices(tmp_path: Path) -> None:
    form = SpawnForm(str(tmp_path), agents=["demo"])
    app = Host(form)
    async with app.run_test(size=SIZE):
        agent = form.query_one("#agent", Select)
        assert agent.value == "auto"
        assert [value for _, value in agent._options] == ["auto", "demo"]
        task = form.query_one("#task-type", Select)
        assert [value for _, value in task._options] == [t.value for t in TaskType]


@pytest.mark.parametrize(
    ("keys", "expected"),
    [(["y"], True), (["enter"], True), (["n"], False), (["escape"], False)],
)
async def test_confirm_dialog_keys(keys: list[str], expected: bool) -> None:
    app = Host(ConfirmDialog("Kill task?", "Task abc123 will be stopped.", "Kill"))
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press(*keys)
        await pilot.pause()
        assert app.results == [expected]


@pytest.mark.parametrize(("button", "expected"), [("#confirm", True), ("#cancel", False)])
async def test_confirm_dialog_buttons(button: str, expected: bool) -> None:
    dialog = ConfirmDialog("Kill task?", "Task abc123 will be stopped.", "Kill")
    app = Host(dialog)
    async with app.run_test(size=SIZE) as pilot:
        assert str(dialog.query_one("#confirm", Button).label) == "Kill"
        await pilot.click(button)
        await pilot.pause()
        assert app.results == [expected]


@pytest.mark.parametrize("key", ["escape", "q", "question_mark"])
async def test_help_lists_keys_and_closes(key: str) -> None:
    keys = [("s", "Spawn a task"), ("k", "Kill the selected task"), ("/", "Filter")]
    screen = HelpScreen(keys)
    app = Host(screen)
    async with app.run_test(size=SIZE) as pilot:
        table = screen.query_one("#keys", DataTable)
        rows = [tuple(str(c) for c in table.get_row_at(i)) for i in range(table.row_count)]
        assert rows == keys
        hint = " ".join(str(s.render()) for s in screen.query(".hint").results(Static))
        assert "ctrl+p" in hint and "/" in hint
        await pilot.press(key)
        await pilot.pause()
        assert app.results == [None]
        assert app.screen is not screen


async def test_spawn_form_takes_a_repository_name(tmp_path: Path) -> None:
    """A registered repository's name needs no directory here; the engine resolves it."""
    form = SpawnForm("calc-2.x")
    app = Host(form)
    async with app.run_test(size=SIZE) as pilot:
        _fill(form, description="write docs")
        await pilot.pause()
        await pilot.press("ctrl+s")
        await until(pilot, lambda: len(app.submitted) == 1)
        assert app.submitted[0].result.request.repository == "calc-2.x"
        assert _shown(form) == {}
