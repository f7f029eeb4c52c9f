"""Modal screens: the spawn form, a yes/no confirmation and the key help.

Styled by `styles/forms.tcss`, which the app loads through `CSS_PATH`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from pydantic import ValidationError
from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import (
    Button,
    Checkbox,
    DataTable,
    Footer,
    Input,
    Label,
    Select,
    Static,
    TextArea,
)

from fleet_core.errors import BadInputError
from fleet_core.models import AgentType, SpawnRequest, TaskType
from fleet_core.repositories import NAME_RE
from fleet_core.runtime.validation import validate_branch

__all__ = ["ConfirmDialog", "HelpScreen", "SpawnForm", "SpawnFormResult"]

AUTO_AGENT = "auto"
FORM_ERROR = "form"
"""Pseudo-field for errors that belong to no field; shown above the buttons."""

# SpawnRequest field -> id of the widget (and of its `error-<id>` line).
FIELD_IDS: dict[str, str] = {
    "description": "description",
    "repository": "repository",
    "task_type": "task-type",
    "agent_type": "agent",
    "model": "model",
    "base_branch": "base-branch",
    "max_retries": "max-retries",
    "timeout_minutes": "timeout",
    "runtime": "runtime",
}
DEFAULT_RUNTIME = "default"
REPO_MESSAGE = "must be a repository's name or an absolute path to an existing directory"


@dataclass(frozen=True)
class SpawnFormResult:
    """What the spawn form produced: a validated request and whether to wait in the queue."""

    request: SpawnRequest
    queue: bool


def _field(label: str, widget: Widget, field_id: str) -> Vertical:
    return Vertical(
        Label(label, classes="field-label"),
        widget,
        Static("", id=f"error-{field_id}", classes="error"),
        classes="field",
    )


def _message(error: Any) -> str:
    if error["type"] == "string_too_short" and error.get("ctx", {}).get("min_length") == 1:
        return "required"
    return str(error["msg"])


class SpawnForm(ModalScreen[SpawnFormResult | None]):
    """Ask for a new task.

    The flow, so the app can keep the form open on an engine error:

    1. Spawn, ctrl+s, or Enter in the last input validates the form locally (pydantic,
       branch name, repository directory). Errors appear under their fields; nothing is posted.
    2. When valid, the form posts `SpawnForm.Submitted(form, result)` and does NOT dismiss.
       Further submits are ignored until step 3.
    3. The app handles `on_spawn_form_submitted`: it calls the engine, then either
       `event.form.dismiss(event.result)` on success, or `event.form.show_error(field, message)`
       (e.g. from a `BadInputError`; unknown fields go to a form-level line), which
       re-enables the form.

    Escape or Cancel dismisses with None.
    """

    AUTO_FOCUS = "#description"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="spawn-form.cancel"),
        Binding("ctrl+s", "submit", "Spawn", priority=True, id="spawn-form.submit"),
    ]

    class Submitted(Message):
        """A locally valid form; the app decides whether it is accepted."""

        def __init__(self, form: SpawnForm, result: SpawnFormResult) -> None:
            super().__init__()
            self.form = form
            self.result = result

        @property
        def control(self) -> SpawnForm:
            return self.form

    def __init__(self, default_repo: str, agents: Sequence[str] | None = None) -> None:
        super().__init__()
        self.default_repo = default_repo
        self.agents = list(agents) if agents is not None else [a.value for a in AgentType]
        self.pending = False
        """True between posting Submitted and the app's `show_error` or `dismiss`."""

    def compose(self) -> ComposeResult:
        task_types = [(t.value.replace("_", " "), t.value) for t in TaskType]
        agents = [(AUTO_AGENT, AUTO_AGENT), *((a, a) for a in self.agents)]
        with Vertical(classes="dialog"):
            yield Label("Spawn a task", classes="title")
            with VerticalScroll(classes="body"):
                yield _field("Description", TextArea(id="description"), "description")
                yield _field("Repository", Input(self.default_repo, id="repository"), "repository")
                with Horizontal(classes="row"):
                    task = Select(task_types, allow_blank=False, value="feature", id="task-type")
                    yield _field("Task type", task, "task-type")
                    agent = Select(agents, allow_blank=False, value=AUTO_AGENT, id="agent")
                    yield _field("Agent", agent, "agent")
                with Horizontal(classes="row"):
                    model = Input(placeholder="router default", id="model")
                    yield _field("Model", model, "model")
                    base = Input(placeholder="repository default", id="base-branch")
                    yield _field("Base branch", base, "base-branch")
                with Horizontal(classes="row"):
                    retries = Input("3", type="integer", id="max-retries")
                    yield _field("Max retries (0-10)", retries, "max-retries")
                    timeout = Input("120", type="integer", id="timeout")
                    yield _field("Timeout minutes (5-480)", timeout, "timeout")
                runtimes = [(DEFAULT_RUNTIME, DEFAULT_RUNTIME), ("local (tmux)", "local"),
                            ("container (Docker)", "container")]  # fmt: skip
                runtime = Select(runtimes, allow_blank=False, value=DEFAULT_RUNTIME, id="runtime")
                yield _field("Runtime", runtime, "runtime")
                yield Checkbox("Wait in the queue when over the limit", id="queue")
            with Vertical(classes="actions"):
                yield Static("", id=f"error-{FORM_ERROR}", classes="error")
                with Horizontal(classes="buttons"):
                    yield Button("Spawn (ctrl+s)", variant="primary", id="spawn")
                    yield Button("Cancel", id="cancel")
        yield Footer()  # says ctrl+s spawns, escape cancels

    # -- reading and checking ------------------------------------------------------------

    def _text(self, widget_id: str) -> str:
        return self.query_one(f"#{widget_id}", Input).value.strip()

    def _collect(self) -> tuple[SpawnFormResult | None, dict[str, str]]:
        """The result, or the errors keyed by widget id (first error per field wins)."""
        agent = self.query_one("#agent", Select).value
        runtime = self.query_one("#runtime", Select).value
        repo = self._text("repository")
        named = bool(NAME_RE.match(repo))  # a registered repository's name
        repo = str(Path(repo).expanduser()) if repo and not named else repo
        raw = {
            "description": self.query_one("#description", TextArea).text,
            "repository": repo,
            "task_type": self.query_one("#task-type", Select).value,
            "agent_type": None if agent == AUTO_AGENT else agent,
            "model": self._text("model") or None,
            "base_branch": self._text("base-branch") or None,
            "max_retries": self._text("max-retries"),
            "timeout_minutes": self._text("timeout"),
            "runtime": None if runtime == DEFAULT_RUNTIME else runtime,
        }
        errors: dict[str, str] = {}
        request: SpawnRequest | None = None
        try:
            request = SpawnRequest.model_validate(raw)
        except ValidationError as exc:
            for error in exc.errors():
                field = str(error["loc"][0]) if error["loc"] else FORM_ERROR
                errors.setdefault(FIELD_IDS.get(field, FORM_ERROR), _message(error))
        is_dir = Path(repo).is_absolute() and Path(repo).is_dir()
        if "repository" not in errors and not (named or is_dir):
            errors["repository"] = REPO_MESSAGE
        base = raw["base_branch"]
        if base and "base-branch" not in errors:
            try:
                validate_branch(str(base), "base_branch")
            except BadInputError as exc:
                errors["base-branch"] = exc.message
        if errors or request is None:
            return None, errors
        return SpawnFormResult(request, self.query_one("#queue", Checkbox).value), {}

    # -- errors ------------------------------------------------------------------------

    def _set_error(self, widget_id: str, message: str) -> None:
        line = self.query_one(f"#error-{widget_id}", Static)
        line.update(message)
        line.set_class(bool(message), "-shown")

    def clear_errors(self) -> None:
        for line in self.query(".error").results(Static):
            line.update("")
            line.remove_class("-shown")

    def show_error(self, field: str, message: str) -> None:
        """Show `message` under `field` (a SpawnRequest field or a widget id) and re-enable
        the form. Fields the form does not have go to the form-level error line."""
        widget_id = FIELD_IDS.get(field, field)
        if widget_id not in FIELD_IDS.values():
            widget_id, message = FORM_ERROR, f"{field}: {message}"
        self._set_error(widget_id, message)
        self._set_pending(False)
        if widget_id != FORM_ERROR:
            self.query_one(f"#{widget_id}").focus()

    def _set_pending(self, pending: bool) -> None:
        self.pending = pending
        self.query_one("#spawn", Button).disabled = pending

    # -- actions and events -------------------------------------------------------------

    def action_submit(self) -> None:
        if self.pending:
            return
        self.clear_errors()
        result, errors = self._collect()
        if result is None:
            for widget_id, message in errors.items():
                self._set_error(widget_id, message)
            first = next((w for w in FIELD_IDS.values() if w in errors), None)
            if first is not None:
                self.query_one(f"#{first}").focus()
            return
        self._set_pending(True)
        self.post_message(self.Submitted(self, result))

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#spawn")
    def _spawn_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_submit()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_cancel()

    @on(Input.Submitted)
    def _input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        if event.input.id == "timeout":
            self.action_submit()
        else:
            self.focus_next()

    @on(Input.Changed)
    @on(Select.Changed)
    @on(TextArea.Changed)
    def _field_changed(self, event: Input.Changed | Select.Changed | TextArea.Changed) -> None:
        widget_id = event.control.id if event.control is not None else None
        if widget_id in FIELD_IDS.values() and self.is_mounted:
            self._set_error(str(widget_id), "")


class ConfirmDialog(ModalScreen[bool]):
    """A yes/no question: y or Enter confirms, n or Escape cancels."""

    AUTO_FOCUS = "#confirm"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,enter", "confirm", "Confirm", id="confirm.yes"),
        Binding("n,escape", "cancel", "Cancel", id="confirm.no"),
    ]

    def __init__(self, title: str, body: str, confirm_label: str = "Yes") -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label(self.title_text, classes="title")
            yield Static(self.body, classes="body")
            with Horizontal(classes="buttons"):
                yield Button(self.confirm_label, variant="warning", id="confirm")
                yield Button("Cancel", id="cancel")
        yield Footer()  # the modal's own keys (y/enter, n/escape)

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm")


class HelpScreen(ModalScreen[None]):
    """The app's keys (passed in as (key, what it does) pairs); escape, q or ? close it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "close", "Close", id="help.close"),
    ]

    def __init__(
        self,
        bindings: Sequence[tuple[str, str]],
        legend: Sequence[tuple[str, str, str, str]] = (),
    ) -> None:
        super().__init__()
        self.keys = list(bindings)
        self.legend = list(legend)  # (symbol, status, style, meaning)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Label("Keys", classes="title")
            yield DataTable(id="keys", cursor_type="none", zebra_stripes=True)
            if self.legend:
                yield Label("Statuses", classes="title")
                yield DataTable(id="legend", cursor_type="none", zebra_stripes=True)
            yield Static(
                "ctrl+p opens the command palette (every action, searchable); "
                "/ filters the task list.",
                classes="hint",
            )
            with Horizontal(classes="buttons"):
                yield Button("Close", id="close")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#keys", DataTable)
        table.add_columns("Key", "What it does")
        for key, description in self.keys:
            table.add_row(key, description)
        if self.legend:
            legend = self.query_one("#legend", DataTable)
            legend.add_columns("", "Status", "Means")
            for symbol, status, style, meaning in self.legend:
                legend.add_row(Text(symbol, style=style), Text(status, style=style), meaning)

    def action_close(self) -> None:
        self.dismiss(None)

    @on(Button.Pressed, "#close")
    def _close_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(None)
