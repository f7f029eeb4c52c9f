"""The fleet's task table: rows keyed by task id and updated in place, cell by cell, as events
arrive (never cleared and refilled on a tick); a `/` filter and sorting by column."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from uuid import UUID

from rich.text import Text
from textual.widgets import DataTable

from fleet_core.cli.output import age
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.review.view import progress as review_progress

S = TaskStatus
# Symbol and style per status: the symbol alone tells each status apart (NO_COLOR), and each
# line's meaning is in the help screen's legend.
LOOK: dict[TaskStatus, tuple[str, str]] = {
    S.PROPOSED: ("◌", "dim"),
    S.SPAWNING: ("◔", "cyan"),
    S.RUNNING: ("●", "green"),
    S.PR_CREATED: ("⇡", "blue"),
    S.REVIEWING: ("◎", "magenta"),
    S.READY: ("★", "bold green"),
    S.MERGED: ("✓", "dim green"),
    S.FAILED: ("✗", "bold red"),
    S.RETRYING: ("↻", "yellow"),
    S.ABANDONED: ("■", "red"),
    S.REJECTED: ("⊗", "magenta"),
    S.CANCELLED: ("-", "dim"),
}
MEANING: dict[TaskStatus, str] = {
    S.PROPOSED: "admitted, about to start",
    S.SPAWNING: "its checkout and agent are starting",
    S.RUNNING: "the agent works",
    S.PR_CREATED: "a pull request is open; CI runs",
    S.REVIEWING: "CI passed; under review",
    S.READY: "ready to merge (m) — needs you",
    S.MERGED: "merged: done",
    S.FAILED: "failed; retried after a wait (r: now)",
    S.RETRYING: "another attempt is starting",
    S.ABANDONED: "failed for good (no retries left) — needs you",
    S.REJECTED: "rejected by review",
    S.CANCELLED: "stopped by an operator",
}
COLUMNS: list[tuple[str, str, int]] = [
    ("id", "ID", 8),
    ("status", "STATUS", 15),
    ("description", "DESCRIPTION", 34),
    ("agent", "AGENT/MODEL", 18),
    ("type", "TYPE", 8),
    ("pr", "PR", 4),
    ("ci", "CI", 7),
    ("retries", "RETRY", 5),
    ("age", "AGE", 4),
]
BRANCH_COLUMN = ("branch", "BRANCH", 26)  # `b` shows it (after the description)
# Under 120 columns (80x24 over ssh): fewer, narrower columns; the task screen has the rest.
COMPACT: list[tuple[str, str, int]] = [
    ("id", "ID", 8),
    ("status", "STATUS", 15),
    ("description", "DESCRIPTION", 28),
    ("pr", "PR", 4),
    ("ci", "CI", 7),
    ("age", "AGE", 4),
]
SORT_KEYS: dict[str, Callable[[TaskRecord], object]] = {
    "id": lambda r: str(r.id),
    "status": lambda r: list(TaskStatus).index(r.status),
    "agent": lambda r: (r.agent_type.value, r.model),
    "type": lambda r: r.task_type.value,
    "description": lambda r: r.description.lower(),
    "branch": lambda r: r.branch,
    "pr": lambda r: r.pr_number or 0,
    "ci": lambda r: r.ci_status.value if r.ci_status else "",
    "retries": lambda r: r.retry_count,
    "age": lambda r: r.created_at,
}


def status_cell(status: TaskStatus, progress: str = "") -> Text:
    """`◆ reviewing 2/3`: the status, with the review's verdicts so far while it runs."""
    symbol, style = LOOK[status]
    return Text(f"{symbol} {status.value} {progress}".rstrip(), style=style)


def short_branch(branch: str) -> str:
    return branch.removeprefix("fleet/")


def one_line(text: str) -> str:
    return " ".join(text.split())


def cells(rec: TaskRecord, now: datetime) -> dict[str, str | Text]:
    reviewing = rec.status is TaskStatus.REVIEWING
    return {
        "id": rec.short_id,
        "status": status_cell(rec.status, review_progress(rec.review_status) if reviewing else ""),
        "description": one_line(rec.description),
        "agent": f"{rec.agent_type.value}/{rec.model}",
        "type": rec.task_type.value,
        "branch": short_branch(rec.branch),
        "pr": f"#{rec.pr_number}" if rec.pr_number else "-",
        "ci": rec.ci_status.value if rec.ci_status else "-",
        "retries": f"{rec.retry_count}/{rec.max_retries}",
        "age": age(rec.created_at, now),
    }


class TaskTable(DataTable[str | Text]):
    def __init__(self, clock: Callable[[], datetime] | None = None, **kw: object) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kw)  # type: ignore[arg-type]
        self.clock = clock or (lambda: datetime.now(UTC))
        self.records: dict[str, TaskRecord] = {}
        self.filter_text = ""
        self.sort_column = "age"
        self.sort_reverse = True  # newest first
        self.columns_shown = COLUMNS
        self.compact = False
        self.show_branch = False
        # A "needs you" filter (the header's counts): (name, which tasks), or None.
        self.need: tuple[str, Callable[[TaskRecord], bool]] | None = None
        self.follow: str | None = None  # a task just spawned: the cursor goes to it
        self.updates = 0  # cells written in place (tests and the benchmark read these)
        self.updated_rows: list[str] = []

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        for key, label, width in self.columns_shown:
            self.add_column(label, key=key, width=width)

    def set_compact(self, compact: bool) -> None:
        """Fewer, narrower columns for a narrow terminal; switching rebuilds the table."""
        if compact != self.compact:
            self.compact = compact
            self._set_columns()

    def toggle_branch(self) -> None:
        self.show_branch = not self.show_branch
        self._set_columns()

    def _set_columns(self) -> None:
        wanted = list(COMPACT if self.compact else COLUMNS)
        if self.show_branch:
            wanted.insert(3, BRANCH_COLUMN)
        if wanted != self.columns_shown:
            self.columns_shown = wanted
            self.clear(columns=True)
            self._add_columns()
            self._rebuild()

    def set_need(self, need: tuple[str, Callable[[TaskRecord], bool]] | None) -> None:
        self.need = need
        self._rebuild()

    def follow_task(self, task_id: UUID) -> None:
        """Put the cursor on this task now, or as soon as its row appears."""
        key = str(task_id)
        if key in self.rows:
            self.follow = None
            self.move_cursor(row=self.get_row_index(key))
        else:
            self.follow = key

    # -- what the screen calls ---------------------------------------------------------------

    @property
    def current_id(self) -> UUID | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return UUID(key) if key else None

    def sync(self, records: Iterable[TaskRecord]) -> None:
        """Make the table show exactly `records` (a full reload), changing only what differs."""
        fresh = {str(r.id): r for r in records}
        for key in [k for k in self.records if k not in fresh]:
            self.drop(key)
        self.upsert(fresh.values())

    def upsert(self, records: Iterable[TaskRecord]) -> None:
        now = self.clock()
        added = False
        for rec in records:
            key = str(rec.id)
            old = self.records.get(key)
            self.records[key] = rec
            visible = self._matches(rec)
            if key not in self.rows:
                if visible:
                    self._add(rec, now)
                    added = True
                continue
            if not visible:
                self.remove_row(key)
                continue
            if old is not None and old.version == rec.version:
                continue
            before = self._cells(old, now) if old else {}
            changed = [(c, v) for c, v in self._cells(rec, now).items() if before.get(c) != v]
            for column, value in changed:
                self.update_cell(key, column, value)
            if changed:
                self.updates += len(changed)
                self.updated_rows.append(key)
        if added:  # a new task: put it in its place (rare, unlike updates)
            self._rebuild()
        if self.follow is not None and self.follow in self.rows:
            self.follow_task(UUID(self.follow))

    def drop(self, key: str) -> None:
        self.records.pop(key, None)
        if key in self.rows:
            self.remove_row(key)

    def tick(self) -> None:
        """Ages move on: rewrite the age column only where the text changed."""
        now = self.clock()
        if not any(key == "age" for key, _, _ in self.columns_shown):
            return
        for key in self.rows:
            rec = self.records.get(str(key.value))
            if rec is not None:
                text = age(rec.created_at, now)
                if self.get_cell(key, "age") != text:
                    self.update_cell(key, "age", text)

    def set_filter(self, text: str) -> None:
        self.filter_text = text.strip().lower()
        self._rebuild()

    def sort_by(self, column: str) -> None:
        if column == self.sort_column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, column == "age"
        self._rebuild()

    # -- internals ---------------------------------------------------------------------------

    def _matches(self, rec: TaskRecord) -> bool:
        if self.need is not None and not self.need[1](rec):
            return False
        if not self.filter_text:
            return True
        fields = [str(rec.id), rec.status.value, rec.agent_type.value, rec.model]
        fields += [rec.task_type.value, rec.branch, rec.description]
        hay = " ".join(fields).lower()
        return all(word in hay for word in self.filter_text.split())

    def _cells(self, rec: TaskRecord, now: datetime) -> dict[str, str | Text]:
        every = cells(rec, now)
        if self.compact:
            every["agent"] = rec.agent_type.value
        return {key: every[key] for key, _, _ in self.columns_shown}

    def _add(self, rec: TaskRecord, now: datetime) -> None:
        self.add_row(*self._cells(rec, now).values(), key=str(rec.id))

    def _rebuild(self) -> None:
        """Rows anew, in order: after a filter or sort change, or a new task; never on updates."""
        current = self.current_id
        self.clear()
        now = self.clock()
        for rec in self._ordered(r for r in self.records.values() if self._matches(r)):
            self._add(rec, now)
        self._restore(current)

    def _ordered(self, records: Iterable[TaskRecord]) -> list[TaskRecord]:
        return sorted(records, key=SORT_KEYS[self.sort_column], reverse=self.sort_reverse)  # type: ignore[arg-type]

    def _restore(self, current: UUID | None) -> None:
        if current is not None and str(current) in self.rows:
            self.move_cursor(row=self.get_row_index(str(current)))
