"""Plain-text and JSON rendering of tasks for the command line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fleet_core.models import FleetStatusSummary, TaskRecord
    from fleet_core.spawn_queue import QueueEntry

COLUMNS = ("ID", "STATUS", "AGENT", "MODEL", "TYPE", "BRANCH", "PR", "CI", "RETRIES", "AGE")


def age(since: datetime, now: datetime | None = None) -> str:
    secs = max(0, int(((now or datetime.now(UTC)) - since).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs // size}{unit}"
    return f"{secs}s"


def task_json(rec: TaskRecord) -> dict[str, Any]:
    """The task as JSON, its one-line "why" first."""
    from fleet_core.why import why

    doc: dict[str, Any] = {"why": why(rec), **rec.model_dump(mode="json")}
    return doc


def dumps(doc: object) -> str:
    return json.dumps(doc, indent=2, sort_keys=False)


def task_row(rec: TaskRecord, now: datetime | None = None) -> tuple[str, ...]:
    return (
        rec.short_id,
        rec.status.value,
        rec.agent_type.value,
        rec.model,
        rec.task_type.value,
        rec.branch,
        f"#{rec.pr_number}" if rec.pr_number else "-",
        rec.ci_status.value if rec.ci_status else "-",
        f"{rec.retry_count}/{rec.max_retries}",
        age(rec.created_at, now),
    )


def table(rows: Sequence[tuple[str, ...]], header: tuple[str, ...] = COLUMNS) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    ]
    return "\n".join(lines)


def status_text(
    summary: FleetStatusSummary, *, who: str, where: str, queue: Sequence[QueueEntry] = ()
) -> str:
    head = (
        f"{summary.active} active, {summary.completed} completed, {summary.failed} failed, "
        f"{summary.queued} queued  ({who}; database: {where})"
    )
    text = head + ("\n\n" + table([task_row(t) for t in summary.tasks]) if summary.tasks else "")
    if queue:
        rows = [
            (str(e.id), e.operator_id, e.tier.value, str(e.request.get("task", {}).get(
                "description", ""))[:60], age(e.created_at))
            for e in queue
        ]  # fmt: skip
        text += "\n\nQueued (admitted in this order as slots free):\n"
        text += table(rows, ("ENTRY", "OPERATOR", "TIER", "DESCRIPTION", "WAITING"))
    if not summary.tasks and not queue:
        text += "\nNo tasks yet."
    return text


def stall_text(rec: TaskRecord) -> str:
    """The task's stall warning in words ("-" when there is none)."""
    w = rec.stall_warning
    if not w:
        return "-"
    return (
        f"no new commit for {w.get('minutes')} min (since {w.get('since')}; warned {w.get('at')})"
    )


def details_text(rec: TaskRecord) -> str:
    fields = [
        ("id", str(rec.id)),
        ("status", f"{rec.status.value} (version {rec.version})"),
        ("operator", rec.operator_id),
        ("agent", f"{rec.agent_type.value} / {rec.model}"),
        ("type", rec.task_type.value),
        ("repository", rec.repository),
        ("base", rec.base_branch or "(default branch)"),
        ("branch", rec.branch),
        ("worktree", rec.worktree_path or "-"),
        ("tmux", rec.tmux_session or "-"),
        ("sandbox", rec.sandbox or "-"),
        ("host", rec.host_id or "-"),
        ("pr", f"#{rec.pr_number}" if rec.pr_number else "-"),
        ("ci", rec.ci_status.value if rec.ci_status else "-"),
        ("retries", f"{rec.retry_count}/{rec.max_retries}"),
        ("timeout", f"{rec.timeout_minutes} min"),
        ("prompt hash", rec.prompt_hash or "-"),
        ("created", rec.created_at.isoformat(timespec="seconds")),
        ("spawned", rec.spawned_at.isoformat(timespec="seconds") if rec.spawned_at else "-"),
        ("completed", rec.completed_at.isoformat(timespec="seconds") if rec.completed_at else "-"),
        ("stalled", stall_text(rec)),
    ]
    from fleet_core.why import attempt_lines, failure_fields, failure_sections, why

    width = max(len(k) for k, _ in fields)
    lines = [why(rec), ""]  # the first line says why the task is where it is
    lines += [f"{k.ljust(width)}  {v}" for k, v in fields]
    lines.append("")
    lines.append(rec.description)
    ctx = rec.failure_context
    if ctx:
        small = failure_fields(ctx)
        if small:
            w = max(len(k) for k, _ in small)
            lines += ["", "failure:", *(f"  {k.ljust(w)}  {v}" for k, v in small)]
        attempts = attempt_lines(ctx)
        if attempts:
            lines += ["", "attempts:", *(f"  {a}" for a in attempts)]
        for title, text in failure_sections(ctx):
            lines += ["", f"--- {title} ---", text.rstrip("\n")]
    return "\n".join(lines)
