"""The reviews as the faces show them: `fleet show`, `fleet diff`, the API, the console."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet_core.errors import ConflictError
from fleet_core.review.store import ReviewRow, ReviewStore

if TYPE_CHECKING:
    from fleet_core.conductor import Actor, Conductor
    from fleet_core.models import TaskRecord

SYMBOL = {"approve": "✓", "request_changes": "✗", "comment": "•"}


def progress(status: dict[str, Any] | None) -> str:
    """`2/3` while the review runs (the table's `reviewing 2/3`), else ''."""
    if not status or status.get("state") != "running":
        return ""
    return f"{status.get('done', 0)}/{status.get('expected', 0)}"


def status_cell(rec: TaskRecord) -> str:
    """The status as the table shows it: `reviewing 2/3` during a review."""
    shown = progress(rec.review_status) if rec.status.value == "reviewing" else ""
    return f"{rec.status.value} {shown}".rstrip()


def summary_text(status: dict[str, Any] | None) -> str:
    """One line for the review as a whole."""
    if not status:
        return "-"
    if status.get("state") == "running":
        return f"running: {progress(status)} verdicts (head {str(status.get('head_sha'))[:8]})"
    verdict = str(status.get("verdict", "-"))
    if verdict == "timed_out":
        verdict = "timed out"
    line = f"{verdict}, {status.get('approvals', 0)} approval(s)"
    if status.get("attempt"):
        line += f", attempt {status['attempt']}"
    if status.get("warning"):
        line += f" (warning: {status['warning']})"
    return line


def dod_lines(status: dict[str, Any] | None) -> list[str]:
    """The Definition of Done as checked when the review ended: one line per item."""
    dod = (status or {}).get("dod")
    if not isinstance(dod, dict):
        return []
    head = "held" if dod.get("ok") else "NOT met"
    items = [i for i in dod.get("items", []) if isinstance(i, dict)]
    return [f"definition of done: {head}"] + [
        f"  {'✓' if i.get('ok') else '✗'} {i.get('name')}: {i.get('detail')}" for i in items
    ]


def verdict_lines(rows: Sequence[ReviewRow], status: dict[str, Any] | None) -> list[str]:
    """The `reviews:` section of `fleet show`: the DoD checklist, the summary, then each
    verdict with its comments, newest attempt first."""
    if status and isinstance(status.get("report"), dict):  # a review task: its report
        return [*dod_lines(status), *report_lines(status["report"])]
    lines = [*dod_lines(status), f"reviews: {summary_text(status)}"]
    for row in sorted(rows, key=lambda r: -r.attempt):
        cost = f", ${row.cost_usd:.4f}" if row.cost_usd is not None else ""
        took = f", {row.duration_ms / 1000:.1f} s" if row.duration_ms is not None else ""
        lines.append(f"  {SYMBOL.get(row.verdict, '?')} attempt {row.attempt} {row.reviewer:<12} "
                     f"{row.verdict:<15} {row.kind}/{row.model}{took}{cost}")  # fmt: skip
        if row.summary:
            lines.append(f"      {row.summary}")
        if row.error:
            lines.append(f"      ({row.error})")
        lines.extend(
            f"      {c.get('path')}:{c.get('line')}: {c.get('body')}" for c in row.comments
        )
    return lines


def report_lines(report: dict[str, Any]) -> list[str]:
    """A review-type task's report (fleet_core.review.report) as `fleet show` prints it."""
    verdict = str(report.get("verdict"))
    lines = [f"report: {SYMBOL.get(verdict, '?')} {verdict}", f"  {report.get('summary', '')}"]
    comments = [c for c in report.get("comments") or [] if isinstance(c, dict)]
    lines += [f"  {c.get('path')}:{c.get('line')}: {c.get('body')}" for c in comments]
    return lines


async def task_reviews(c: Conductor, actor: Actor, ref: str) -> tuple[TaskRecord, list[ReviewRow]]:
    rec = await c.show(actor, ref)
    return rec, await ReviewStore(c.db).for_task(actor.tenant, rec.id)


async def task_diff(c: Conductor, actor: Actor, ref: str) -> tuple[TaskRecord, str]:
    """The PR's diff against its base, through the task's forge."""
    rec = await c.show(actor, ref)
    if not rec.pr_number:
        raise ConflictError(f"task {rec.short_id} has no pull request yet ({rec.status.value})")
    forge = await c.forges.for_repo(Path(rec.repository))
    return rec, await forge.diff(Path(rec.repository), rec.pr_number)
