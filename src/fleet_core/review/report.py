"""A `review`-type task makes no PR: its Definition of Done is its report, the verdict JSON
its agent ends its output with (the review schema of fleet_core.review.verdict: verdict,
summary, line comments). The prompt asks for it (enrichment.REVIEW_REPORT_ASK).

When such an agent ends well, the monitor asks `outcome`: a valid report → `ready` (running →
ready, the one edge that skips pr_created and reviewing), the report kept in `review_status`
(`report`, with a one-item DoD) and shown by `fleet show`, the API's task detail and the
console; no report → `failed` (`no_report`, retried like any failure, the output's end in the
context). Its branch is never made a PR."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.retry import failure_context
from fleet_core.review.verdict import Answer, InvalidAnswer, parse_answer
from fleet_core.runtime.echo import strip_echo

if TYPE_CHECKING:
    from fleet_core.conductor import Conductor

NO_REPORT = "no_report"
READ_LINES = 400  # the end of the agent's output where its report is looked for
ATTEMPT_START = "fleet: starting "  # the launcher's first line (as fleet_core.judging)


def find_report(text: str) -> Answer | None:
    """The last verdict JSON in `text` that the review schema accepts (a JSON object over one
    or more whole lines, possibly in a ```json fence), else None."""
    lines = text.splitlines()
    for start in range(len(lines) - 1, -1, -1):
        if not lines[start].lstrip().startswith(("{", "```")):
            continue
        for end in range(len(lines), start, -1):
            try:
                return parse_answer("\n".join(lines[start:end]))
            except InvalidAnswer:
                continue
    return None


async def output(c: Conductor, rec: TaskRecord) -> str:
    """This attempt's output, without what the agent echoed of its prompt."""
    text = await c.runtime.logs(rec.id, READ_LINES)
    lines = strip_echo(text, c.runtime.prompt_hashes(rec.id)).splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith(ATTEMPT_START)]
    return "\n".join(lines[starts[-1] :] if starts else lines)


async def outcome(c: Conductor, rec: TaskRecord) -> tuple[TaskStatus, str, dict[str, Any]]:
    """Where a review-type task whose agent ended well goes, why, and what it keeps."""
    text = await output(c, rec)
    answer = find_report(text)
    if answer is None:
        tail = "\n".join(text.splitlines()[-60:]) or None
        hint = "a review task ends its output with its report's JSON"
        ctx = failure_context(NO_REPORT, previous=rec, log_tail=tail, hint=hint)
        return TaskStatus.FAILED, NO_REPORT, {"failure_context": ctx}
    report = answer.model_dump(mode="json")
    detail = f"{answer.verdict.value}, {len(answer.comments)} line comment(s)"
    status = {
        "state": "done", "verdict": "report", "report": report, "attempt": rec.retry_count + 1,
        "finished_at": datetime.now(UTC).isoformat(),
        "dod": {"ok": True, "items": [{"name": "report", "ok": True, "detail": detail}]},
    }  # fmt: skip
    return TaskStatus.READY, "report_ready", {"review_status": status}
