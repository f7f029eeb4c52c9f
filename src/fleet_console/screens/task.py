"""One task in full: its live log (the agent's tmux pane), details, CI, reviews, audit trail
and the PR's diff.

Loads go through one exclusive worker group, so nothing blocks the UI; the log is polled once a
second only while its tab is visible and this screen is on top, and re-rendered only when the
captured text changed."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ClassVar
from uuid import UUID

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Footer, Log, Static, TabbedContent, TabPane
from textual.worker import Worker, WorkerState

from fleet_console.source import EngineSource
from fleet_console.widgets.diff_view import render_diff
from fleet_console.widgets.review_rows import review_rows
from fleet_core.errors import FleetError, NoSessionError
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.review.store import ReviewRow
from fleet_core.why import attempt_lines, cause, failure_fields, failure_sections, why

TABS = ("log", "details", "ci", "reviews", "audit", "diff")
TAB_TITLES = {
    "log": "Log",
    "details": "Details",
    "ci": "CI",
    "reviews": "Reviews",
    "audit": "Audit",
    "diff": "Diff",
}
LOG_LINES = 1000
CI_LOG_LINES = 40
DASH = "—"


def iso_minutes(when: datetime | None) -> str:
    """An absolute timestamp, UTC, to the minute."""
    return DASH if when is None else f"{when.astimezone(UTC):%Y-%m-%dT%H:%MZ}"


def ago(when: datetime | None, now: datetime) -> str:
    if when is None:
        return DASH
    seconds = max(0, int((now - when).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _one_line(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, default=str)


class TaskScreen(Screen[None]):
    """The task detail screen; `tab` is the id of the tab shown first."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="task.back", tooltip="Back to the previous screen"),
        Binding("q", "back", "Back", show=False, id="task.back_q"),
        Binding(
            "ctrl+r", "refresh_now", "Reload", id="task.refresh", tooltip="Reload this task now"
        ),
        *(
            Binding(str(n), f"show_tab('{tab}')", TAB_TITLES[tab], show=False, id=f"task.tab_{tab}")
            for n, tab in enumerate(TABS, start=1)
        ),
    ]
    POLL_SECONDS: ClassVar[float] = 1.0

    def __init__(
        self,
        source: EngineSource,
        task_id: UUID,
        tab: str = "log",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__()
        self.source = source
        self.task_id = task_id
        self.initial_tab = tab if tab in TABS else "log"
        self.clock = clock or (lambda: datetime.now(UTC))
        self.record: TaskRecord | None = None
        self.gone = False
        self.log_refreshes = 0  # captures taken (polls)
        self.log_renders = 0  # captures that changed the log
        self._log_hash: str | None = None
        self._ci_rows: list[tuple[str, str]] = []
        self._review_rows: list[tuple[str, str]] = []
        self._shown_tab = self.initial_tab
        self._poll: Timer | None = None
        self._loader: Worker[None] | None = None

    def compose(self) -> ComposeResult:
        yield Static(f"{str(self.task_id)[:8]}  loading ...", id="task-header", markup=False)
        with TabbedContent(initial=self.initial_tab, id="task-tabs"):
            with TabPane("1 Log", id="log"):
                yield Log(max_lines=LOG_LINES, auto_scroll=True, id="task-log")
            with TabPane("2 Details", id="details"), VerticalScroll(id="details-scroll"):
                yield Static("", id="details-body", markup=False)
            with TabPane("3 CI", id="ci"):
                yield DataTable(id="ci-table", cursor_type="row", zebra_stripes=True)
            with TabPane("4 Reviews", id="reviews"):
                yield DataTable(id="reviews-table", cursor_type="row", zebra_stripes=True)
            with TabPane("5 Audit", id="audit"):
                yield DataTable(id="audit-table", cursor_type="row", zebra_stripes=True)
            with TabPane("6 Diff", id="diff"), VerticalScroll(id="diff-scroll"):
                yield Static("", id="diff-body")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#ci-table", DataTable).add_columns("item", "value")
        self.query_one("#reviews-table", DataTable).add_columns("item", "value")
        audit = self.query_one("#audit-table", DataTable)
        for label, key in (("time", "time"), ("event", "event"), ("from → to", "move")):
            audit.add_column(label, key=key)
        audit.add_column("detail", key="detail")
        self._poll = self.set_interval(self.POLL_SECONDS, self._tick, pause=True, name="task-log")
        self.load()
        self._sync_polling()

    # -- polling -------------------------------------------------------------------------------

    @property
    def active_tab(self) -> str:
        return self.query_one("#task-tabs", TabbedContent).active

    @property
    def polling(self) -> bool:
        """The log is polled: its tab is visible, this screen is on top, the task exists."""
        return self.is_active and self.active_tab == "log" and not self.gone

    def _sync_polling(self) -> None:
        if self._poll is None:
            return
        if self.polling:
            self._poll.resume()
        else:
            self._poll.pause()

    def _tick(self) -> None:
        if not self.polling:
            self._sync_polling()
        elif self._loader is None or self._loader.is_finished:  # never pile up slow loads
            self.load()

    @on(TabbedContent.TabActivated, "#task-tabs")
    def _tab_changed(self, event: TabbedContent.TabActivated) -> None:
        self._sync_polling()
        if self.active_tab != self._shown_tab:
            self._shown_tab = self.active_tab
            if self._shown_tab in ("log", "diff"):  # show it now, not at the next tick
                self.load()

    def on_screen_resume(self) -> None:
        self._sync_polling()

    def on_screen_suspend(self) -> None:
        if self._poll is not None:
            self._poll.pause()

    # -- actions -------------------------------------------------------------------------------

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_refresh_now(self) -> None:
        self.load()

    def action_show_tab(self, tab: str) -> None:
        if tab in TABS:
            self.query_one("#task-tabs", TabbedContent).active = tab

    # -- loading -------------------------------------------------------------------------------

    def load(self) -> None:
        """Reload in the background (a newer load cancels an older one)."""
        self._loader = self._load()

    @work(exclusive=True, group="task-screen", exit_on_error=False)
    async def _load(self) -> None:
        await self.refresh_data()

    @on(Worker.StateChanged)
    def _load_failed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "task-screen" and event.state is WorkerState.ERROR:
            error = event.worker.error
            self._header(f"{str(self.task_id)[:8]}  load failed: {error}", "error")

    async def refresh_data(self) -> None:
        """The record and audit trail, and the log when its tab is showing."""
        rec = await self.source.task(self.task_id)
        if rec is None:
            self._show_gone()
            return
        audit = await self.source.audit(self.task_id)
        deliveries = await self.source.deliveries(rec.id)
        reviews = await self.source.reviews(rec.id)
        self.record, self.gone = rec, False
        now = self.clock()
        with self.app.batch_update():
            self._render_header(rec, now)
            self._render_details(rec, now, deliveries)
            self._render_ci(rec)
            self._render_reviews(rec, reviews)
            self._render_audit(audit)
        if self.active_tab == "log":
            await self.refresh_log()
        elif self.active_tab == "diff":
            await self.refresh_diff(rec, reviews)
        self._sync_polling()

    async def refresh_diff(self, rec: TaskRecord, reviews: list[ReviewRow]) -> None:
        """The PR's diff against its base (read from the forge when the tab is shown)."""
        try:
            shown = render_diff(await self.source.diff(rec), reviews)
        except (FleetError, OSError) as exc:
            shown = Text(f"no diff: {exc}", style="dim")
        self.query_one("#diff-body", Static).update(shown)

    async def refresh_log(self) -> None:
        self.log_refreshes += 1
        try:
            text = await self.source.logs(self.task_id, LOG_LINES)
        except NoSessionError as exc:
            text = f"no agent session: {exc}"
        except FleetError as exc:
            text = f"log unavailable: {exc}"
        digest = hashlib.sha256(text.encode()).hexdigest()
        if digest == self._log_hash:
            return
        self._log_hash = digest
        self.log_renders += 1
        log = self.query_one("#task-log", Log)
        follow = log.is_vertical_scroll_end or log.max_scroll_y == 0
        keep_y = log.scroll_y
        log.clear()
        log.write_lines(text.splitlines(), scroll_end=False)
        if follow:
            log.scroll_end(animate=False, immediate=True, x_axis=False)
        else:  # the operator scrolled up: stay where they are
            log.scroll_to(y=keep_y, animate=False, immediate=True)

    # -- rendering -----------------------------------------------------------------------------

    def _header(self, text: str, css_class: str | None = None) -> None:
        header = self.query_one("#task-header", Static)
        header.update(text)
        header.set_classes(css_class or "")

    def _show_gone(self) -> None:
        self.record, self.gone = None, True
        self._header(f"{str(self.task_id)[:8]}  task gone: it no longer exists", "gone")
        self.query_one("#details-body", Static).update("task gone")
        self._sync_polling()

    def _render_header(self, rec: TaskRecord, now: datetime) -> None:
        """First line: why the task is where it is; then what it is."""
        self._header(
            f"{rec.short_id}  {why(rec)}\n{rec.description.splitlines()[0][:200]}  ·  "
            f"{rec.agent_type.value}/{rec.model}  ·  created {ago(rec.created_at, now)}",
            f"status-{rec.status.value}",
        )

    def _render_details(
        self, rec: TaskRecord, now: datetime, deliveries: list[dict[str, Any]] | None = None
    ) -> None:
        pr = f"#{rec.pr_number}" if rec.pr_number is not None else DASH

        def stamp(when: datetime | None) -> str:
            return DASH if when is None else f"{iso_minutes(when)}  ({ago(when, now)})"

        fields = [
            ("id", str(rec.id)),
            ("description", rec.description),
            ("task type", rec.task_type.value),
            ("prompt hash", rec.prompt_hash or DASH),
            ("repository", rec.repository),
            ("branch", rec.branch),
            ("base", rec.base_branch or DASH),
            ("worktree", rec.worktree_path or DASH),
            ("tmux session", rec.tmux_session or DASH),
            ("host", rec.host_id or DASH),
            ("PR", pr),
            ("CI", rec.ci_status.value if rec.ci_status else DASH),
            ("retries", f"{rec.retry_count}/{rec.max_retries}"),
            ("timeout", f"{rec.timeout_minutes} min"),
            ("created", stamp(rec.created_at)),
            ("spawned", stamp(rec.spawned_at)),
            ("completed", stamp(rec.completed_at)),
        ]
        if rec.stall_warning:  # no new commit since the agent's start or its last commit
            w = rec.stall_warning
            fields.append(("stalled", f"no new commit for {w.get('minutes')} min "
                                      f"(warned {w.get('at')})"))  # fmt: skip
        lines = [why(rec), ""]
        lines += [f"{label:<13} {value}" for label, value in fields]
        if deliveries:
            lines += ["", "notifications:"]
            lines += [f"  {notification_line(d)}" for d in deliveries]
        ctx = rec.failure_context
        if ctx:  # small fields, then the attempts, then each big text in its own section
            small = failure_fields(ctx)
            if small:
                lines += ["", "failure:", *(f"  {k:<15} {v}" for k, v in small)]
            attempts = attempt_lines(ctx)
            if attempts:
                lines += ["", "attempts:", *(f"  {a}" for a in attempts)]
            for title, text in failure_sections(ctx):
                lines += ["", f"── {title} ──", text.rstrip("\n")]
        self.query_one("#details-body", Static).update("\n".join(lines))

    def _render_ci(self, rec: TaskRecord) -> None:
        """The current attempt's CI first; the failure context's CI log only under the
        attempt it belongs to (a retried task's old failing log is not its current CI)."""
        failure = rec.failure_context or {}
        current = rec.retry_count + 1
        ended = rec.status in (TaskStatus.FAILED, TaskStatus.ABANDONED, TaskStatus.REJECTED)
        ctx_attempt = current if ended else current - 1  # whose failure the context holds
        state = rec.ci_status.value if rec.ci_status else "none yet"
        rows = [(f"attempt {current} (current)", f"ci {state}")]

        def failure_rows(tag: str) -> list[tuple[str, str]]:
            out = [(f"{tag} failing check", str(n)) for n in failure.get("failing_checks") or []]
            if failure.get("ci_url"):
                out.append((f"{tag} ci url", str(failure["ci_url"])))
            log = str(failure.get("ci_log") or "").splitlines()[-CI_LOG_LINES:]
            return out + [(f"{tag} ci log", line) for line in log]

        if ctx_attempt == current:
            rows += failure_rows("")
        earlier = [a for a in failure.get("attempts") or []
                   if isinstance(a, dict) and a.get("attempt") != current]  # fmt: skip
        for entry in sorted(earlier, key=lambda a: -int(a.get("attempt") or 0)):
            n = entry.get("attempt")
            rows.append((f"attempt {n}", str(entry.get("cause") or entry.get("reason"))))
            if n == ctx_attempt and ctx_attempt != current:
                rows += failure_rows(f"attempt {n}")
        if ctx_attempt != current and ctx_attempt >= 1 and not earlier and failure:
            rows.append((f"attempt {ctx_attempt}", cause(failure, rec.timeout_minutes)))
            rows += failure_rows(f"attempt {ctx_attempt}")
        rows = [(k.strip(), v) for k, v in rows]
        self._ci_rows = self._fill("#ci-table", rows, self._ci_rows)

    def _render_reviews(self, rec: TaskRecord, reviews: list[ReviewRow]) -> None:
        rows = review_rows(rec, reviews)
        self._review_rows = self._fill("#reviews-table", rows, self._review_rows)

    def _fill(
        self, selector: str, rows: list[tuple[str, str]], before: list[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """Small tables: rebuilt only when their content changed. The columns are sized from
        the content as it arrives: the first render after it is laid out right (a table left
        to measure its cells on its next idle pass can be drawn before that, cutting them)."""
        if rows != before:
            table = self.query_one(selector, DataTable)
            table.clear(columns=True)
            for n, label in enumerate(("item", "value")):
                width = max([cell_len(label), *(cell_len(row[n]) for row in rows)])
                table.add_column(label, width=width)
            for row in rows:
                table.add_row(*row)
        return rows

    def _render_audit(self, trail: list[dict[str, Any]]) -> None:
        """The trail only grows: rows are keyed by audit id and only new ones are added."""
        table = self.query_one("#audit-table", DataTable)
        for n, row in enumerate(trail):
            key = str(row.get("id", n))
            if key in table.rows:
                continue
            move = DASH
            if row.get("from_status") or row.get("to_status"):
                move = f"{row.get('from_status') or DASH} → {row.get('to_status') or DASH}"
            table.add_row(
                iso_minutes(row.get("created_at")),
                str(row.get("event_type", "")),
                move,
                _one_line(row.get("detail")),
                key=key,
            )


def notification_line(d: dict[str, Any]) -> str:
    """`task.merged  discord  delivered 12:01 (1 attempt)` and the like."""
    n = d["attempts"]
    tries = f"{n} attempt{'s' if n != 1 else ''}"
    if d["delivered_at"]:
        state = f"delivered {str(d['delivered_at'])[11:16]} ({tries})"
    elif d["dead_at"]:
        state = f"DEAD-LETTERED after {tries}: {d['last_error'] or d['last_status']}"
    elif n:
        state = f"retrying ({tries}; last {d['last_error'] or d['last_status']})"
    else:
        state = "pending"
    return f"{d['event'] or '-':<16} {d['channel']:<9} {state}"
