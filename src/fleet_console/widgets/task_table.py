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

S = TaskStatus
# Symbol and style per status: the symbol carries the meaning without colour (NO_COLOR).
LOOK: dict[TaskStatus, tuple[str, str]] = {
    S.PROPOSED: ("◌", "dim"),
    S.SPAWNING: ("◔", "cyan"),
    S.RUNNING: ("●", "green"),
    S.PR_CREATED: ("⇡", "blue"),
    S.REVIEWING: ("◎", "magenta"),
    S.READY: ("✔", "bold green"),
    S.MERGED: ("✓", "dim green"),
    S.FAILED: ("✗", "bold red"),
    S.RETRYING: ("↻", "yellow"),
    S.ABANDONED: ("⊘", "red"),
    S.REJECTED: ("✗", "magenta"),
    S.CANCELLED: ("⊖", "dim"),
}
COLUMNS: list[tuple[str, str, int]] = [
    ("id", "ID", 8),
    ("status", "STATUS", 12),
    ("agent", "AGENT/MODEL", 24),
    ("type", "TYPE", 8),
    ("branch", "BRANCH", 30),
    ("pr", "PR", 4),
    ("ci", "CI", 7),
    ("retries", "RETRY", 5),
    ("age", "AGE", 4),
]
# Under 120 columns (80x24 over ssh): fewer, narrower columns; the task screen has the rest.
COMPACT: list[tuple[str, str, int]] = [
    ("id", "ID", 8),
    ("status", "STATUS", 12),
    ("agent", "AGENT", 12),
    ("branch", "BRANCH", 18),
    ("pr", "PR", 4),
    ("ci", "CI", 7),
    ("age", "AGE", 4),
]
SORT_KEYS: dict[str, Callable[[TaskRecord], object]] = {
    "id": lambda r: str(r.id),
    "status": lambda r: list(TaskStatus).index(r.status),
    "agent": lambda r: (r.agent_type.value, r.model),
    "type": lambda r: r.task_type.value,
    "branch": lambda r: r.branch,
    "pr": lambda r: r.pr_number or 0,
    "ci": lambda r: r.ci_status.value if r.ci_status else "",
    "retries": lambda r: r.retry_count,
    "age": lambda r: r.created_at,
}


def status_cell(status: TaskStatus) -> Text:
    symbol, style = LOOK[status]
    return Text(f"{symbol} {status.value}", style=style)


def cells(rec: TaskRecord, now: datetime) -> dict[str, str | Text]:
    return {
        "id": rec.short_id,
        "status": status_cell(rec.status),
        "agent": f"{rec.agent_type.value}/{rec.model}",
        "type": rec.task_type.value,
        "branch": rec.branch,
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
        self.updates = 0  # cells written in place (tests and the benchmark read these)
        self.updated_rows: list[str] = []

    def on_mount(self) -> None:
        self._add_columns()

    def _add_columns(self) -> None:
        for key, label, width in self.columns_shown:
            self.add_column(label, key=key, width=width)

    def set_compact(self, compact: bool) -> None:
        """Fewer, narrower columns for a narrow terminal; switching rebuilds the table."""
        wanted = COMPACT if compact else COLUMNS
        if wanted is not self.columns_shown:
            self.columns_shown = wanted
            self.clear(columns=True)
            self._add_columns()
            self._rebuild()

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
        if not self.filter_text:
            return True
        fields = [str(rec.id), rec.status.value, rec.agent_type.value, rec.model]
        fields += [rec.task_type.value, rec.branch, rec.description]
        hay = " ".join(fields).lower()
        return all(word in hay for word in self.filter_text.split())

    def _cells(self, rec: TaskRecord, now: datetime) -> dict[str, str | Text]:
        every = cells(rec, now)
        if self.columns_shown is COMPACT:
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
