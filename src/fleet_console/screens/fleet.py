"""The fleet screen: the task table (rows updated in place), the governor panel, a status line,
a `/` filter, and the single-key verbs on the selected task."""

from __future__ import annotations

from typing import TYPE_CHECKING
from uuid import UUID

from textual import events, on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from fleet_console import needs
from fleet_console.messages import EngineReady, TasksChanged
from fleet_console.widgets.governor_panel import GovernorPanel
from fleet_console.widgets.task_table import TaskTable
from fleet_core.errors import FleetError
from fleet_core.lifecycle import TERMINAL, TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.overview import Overview

if TYPE_CHECKING:
    from fleet_console.app import FleetApp

SIDE_PANEL_MIN = 150  # columns from which the governor panel sits beside the table
COMPACT_BELOW = 120  # columns under which the table shows fewer columns
OVERVIEW_S = 2.0
RELOAD_S = 5.0
AGES_S = 5.0
# Keys that need a selected task, and the statuses in which they apply.
NEEDS_TASK = {"stop", "retry", "merge", "delete", "attach", "logs"}
LIVE_AGENT = (TaskStatus.SPAWNING, TaskStatus.RUNNING)
ALLOWED = {
    "stop": lambda s: s not in TERMINAL,
    "retry": lambda s: s in (TaskStatus.FAILED, TaskStatus.REJECTED),
    "merge": lambda s: s is TaskStatus.READY,
    "delete": lambda s: s in TERMINAL,
    "attach": lambda s: s in LIVE_AGENT,
}
# The verb keys, for the one-line notice when one does not apply.
VERB_KEYS = {"s": "stop", "r": "retry", "m": "merge", "d": "delete", "a": "attach", "l": "logs"}


def refusal(action: str, rec: TaskRecord | None) -> str:
    """Why a verb's key did nothing, in one line."""
    if rec is None:
        return f"{action}: no task selected"
    who, status = rec.short_id, rec.status.value
    if action == "stop":
        return f"{who} is already {status}: there is nothing to stop"
    if action == "retry":
        if rec.status is TaskStatus.ABANDONED:
            return (f"{who} was abandoned after {rec.retry_count + 1} attempt(s): "
                    "spawn it again (n)")  # fmt: skip
        return f"only a failed or rejected task can be retried; {who} is {status}"
    if action == "merge":
        return f"only a ready task can be merged; {who} is {status}"
    if action == "delete":
        return f"only a finished task can be deleted; {who} is {status}: stop it first (s)"
    if action == "attach":
        return f"{who} has no live agent ({status}): l shows its log and details"
    return f"{action} does not apply to {who} ({status})"


class FleetScreen(Screen[None]):
    BINDINGS = [
        Binding("n", "spawn", "New", id="spawn", tooltip="spawn an agent on a new task"),
        Binding("s", "stop", "Stop", id="stop", tooltip="kill the agent, cancel the task"),
        Binding("r", "retry", "Retry", id="retry", tooltip="try a failed task again now"),
        Binding("m", "merge", "Merge", id="merge", tooltip="merge a ready task's PR"),
        Binding("d", "delete", "Delete", id="delete", tooltip="remove a finished task"),
        Binding("a", "attach", "Attach", id="attach", tooltip="tmux attach to the agent"),
        Binding("l", "logs", "Logs", id="logs", tooltip="the task: log, details, CI, audit"),
        Binding("slash", "filter", "Filter", id="filter", tooltip="filter the tasks"),
        Binding("b", "branch", "Branch", id="branch", show=False, tooltip="branch column"),
        Binding("escape", "clear_filter", "Clear filter", id="clear-filter", show=False),
        *(
            Binding(n.key, f"need('{n.name}')", n.label, id=f"need-{n.name}", show=False)
            for n in needs.NEEDS
        ),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.table = TaskTable(id="tasks")
        self.panel = GovernorPanel(id="governor")
        self.status = Static("starting the engine…", id="status")
        self.needs_line = Static("", id="needs")
        self.queued = 0
        self.overview: Overview | None = None
        self.filter_box = Input(placeholder="filter: words in id, status, agent, branch, …",
                                id="filter")  # fmt: skip

    @property
    def fleet(self) -> FleetApp:
        return self.app  # type: ignore[return-value]

    def compose(self) -> ComposeResult:
        yield Static(self.fleet.heading(), id="heading")
        yield self.needs_line
        with Horizontal(id="main"):
            yield self.table
            yield self.panel
        yield self.filter_box
        yield self.status
        yield Footer(compact=True)

    def on_resize(self) -> None:
        self.apply_width(self.size.width)

    def apply_width(self, width: int) -> None:
        side = width >= SIDE_PANEL_MIN
        self.set_class(side, "-side-panel")
        self.panel.set_side(side)
        self.table.set_compact(width < COMPACT_BELOW)

    def on_mount(self) -> None:
        self.apply_width(self.size.width)
        self.table.clock = self.fleet.clock
        self.filter_box.display = False
        self.panel.show(None)
        self.table.focus()
        self.set_interval(OVERVIEW_S, self.refresh_overview, name="overview")
        self.set_interval(RELOAD_S, self.reload, name="reload")
        self.set_interval(AGES_S, self.table.tick, name="ages")
        if self.fleet.source is not None:
            self.reload()

    # -- data ----------------------------------------------------------------------------------

    @on(EngineReady)
    def engine_ready(self) -> None:
        self.reload()
        self.refresh_overview()

    @work(exclusive=True, group="reload", exit_on_error=False)
    async def reload(self) -> None:
        """Every task again (changes by other processes reach us this way too)."""
        source = self.fleet.source
        if source is None:
            return
        records = await source.tasks()
        self.table.sync(records)
        self.refresh_bindings()
        self.set_status()

    @on(TasksChanged)
    async def tasks_changed(self, message: TasksChanged) -> None:
        source = self.fleet.source
        if source is None or message.task_ids is None:
            self.reload()
            return
        found = []
        with self.app.batch_update():
            for task_id in message.task_ids:
                rec = await source.task(task_id)
                if rec is None:
                    self.table.drop(str(task_id))
                else:
                    found.append(rec)
            self.table.upsert(found)
        self.refresh_bindings()
        self.set_status()

    @work(exclusive=True, group="overview", exit_on_error=False)
    async def refresh_overview(self) -> None:
        if self.fleet.source is not None:
            ov = await self.fleet.source.overview()
            self.panel.show(ov)
            self.queued = ov.queued
            self.overview = ov
            self.show_needs()

    def stalled(self) -> set[UUID]:
        bridge = self.fleet.bridge
        return set(bridge.stalled) if bridge is not None else set()

    def show_needs(self) -> None:
        """The header line: what needs the operator, each count a filter."""
        numbers = needs.counts(self.table.records.values(), self.stalled(), self.queued)
        active = self.table.need[0] if self.table.need else None
        ov = self.overview
        self.needs_line.update(needs.header_markup(
            numbers, active, paused=ov.paused if ov else None,
            forge_errors=ov.forge_errors if ov else None,
        ))  # fmt: skip

    def set_status(self, note: str = "") -> None:
        total = len(self.table.records)
        shown = []
        if self.table.need:
            shown.append(needs.BY_NAME[self.table.need[0]].label)
            if self.table.need[0] == "queued" and self.queued:
                shown.append(f"{self.queued} spawn(s) wait in the queue for a slot")
        if self.table.filter_text:
            shown.append(f"filter: {self.table.filter_text}")
        if shown:
            text = f"{self.table.row_count} of {total} tasks  ·  {'  ·  '.join(shown)}"
        else:
            text = f"{total} tasks"
        self.status.update(f"{text}  ·  {note}" if note else text)
        self.show_needs()

    # -- keys ----------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "spawn":
            return True if self.fleet.source is not None else None
        if action not in NEEDS_TASK:
            return True
        # A verb that does not apply to the selected task leaves the footer (which then fits
        # in 80 columns) and its key does nothing.
        rec = self.selected()
        if rec is None:
            return False
        rule = ALLOWED.get(action)
        return not (rule is not None and not rule(rec.status))

    def selected(self) -> TaskRecord | None:
        task_id = self.table.current_id
        return None if task_id is None else self.table.records.get(str(task_id))

    @on(DataTable.RowHighlighted)
    def row_moved(self) -> None:
        self.refresh_bindings()

    @on(DataTable.RowSelected)
    def row_chosen(self) -> None:
        """Enter on a row (the table takes the key itself): attach, like `a`, to a live
        agent; the task screen otherwise."""
        if self.check_action("attach", ()):
            self.action_attach()
        elif self.selected() is not None:
            self.action_logs()

    def on_key(self, event: events.Key) -> None:
        """A verb's key that does not apply (hidden from the footer, so its binding did not
        run) gets a one-line notice instead of silence."""
        action = VERB_KEYS.get(event.key)
        if action is None or self.fleet.source is None:
            return
        if not self.check_action(action, ()):
            event.stop()
            self.notify(refusal(action, self.selected()), title="not now",
                        severity="warning", timeout=4)  # fmt: skip

    def action_need(self, name: str) -> None:
        """Show only the tasks of one "needs you" count; the same key again shows all."""
        if self.table.need and self.table.need[0] == name:
            self.table.set_need(None)
        else:
            self.table.set_need((name, needs.predicate(name, self.stalled())))
        self.set_status()

    def action_branch(self) -> None:
        self.table.toggle_branch()

    @on(DataTable.HeaderSelected)
    def header_clicked(self, event: DataTable.HeaderSelected) -> None:
        self.table.sort_by(str(event.column_key.value))

    def action_spawn(self) -> None:
        self.fleet.open_spawn_form()

    def action_stop(self) -> None:
        self._confirm_then("stop", "Stop {id}?", "Kill the agent and cancel the task.")

    def action_merge(self) -> None:
        self._confirm_then("merge", "Merge {id}?", "Merge PR #{pr} into its base branch.")

    def action_delete(self) -> None:
        self._confirm_then(
            "delete", "Delete {id}?",
            "Remove the worktree (unpushed or uncommitted work is saved first) and the task.",
        )  # fmt: skip

    def action_retry(self) -> None:
        rec = self.selected()
        if rec is not None:
            self.fleet.run_verb("retry", rec.id)

    def action_attach(self) -> None:
        rec = self.selected()
        if rec is not None:
            self.fleet.attach(rec.id)

    def action_logs(self) -> None:
        rec = self.selected()
        if rec is not None:
            self.fleet.open_task(rec.id, "log")

    def action_filter(self) -> None:
        self.filter_box.display = True
        self.filter_box.focus()

    def action_clear_filter(self) -> None:
        self.filter_box.value = ""
        self.filter_box.display = False
        self.table.set_filter("")
        if self.table.need:
            self.table.set_need(None)
        self.set_status()
        self.table.focus()

    @on(Input.Changed, "#filter")
    def filter_changed(self, event: Input.Changed) -> None:
        self.table.set_filter(event.value)
        self.set_status()

    @on(Input.Submitted, "#filter")
    def filter_done(self) -> None:
        self.filter_box.display = bool(self.filter_box.value)
        self.table.focus()

    def _confirm_then(self, verb: str, title: str, body: str) -> None:
        rec = self.selected()
        if rec is None:
            return
        task_id: UUID = rec.id
        words = {"id": rec.short_id, "pr": rec.pr_number or "?"}
        self.fleet.confirm(title.format(**words), body.format(**words), verb, task_id)

    def show_error(self, error: FleetError) -> None:
        self.set_status(f"[red]{error}[/red]")
