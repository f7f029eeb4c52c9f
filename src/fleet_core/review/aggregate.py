"""From verdicts to the task's next status (T-7.5).

Any `request_changes` → rejected (retried with the comments). Otherwise at least
`min_approvals` approvals → ready; unset, every reviewer that answered approve or
request_changes must approve (a `comment`, a crashed or a missing reviewer abstains). A review
that timed out → ready with the `review_timed_out` warning, or with `strict` a failure
(`review_timeout`) that is retried. Fewer approvals than a configured minimum → rejected."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fleet_core.review.store import ReviewRow
from fleet_core.review.verdict import Verdict

READY, REJECTED = "ready", "rejected"


@dataclass(frozen=True)
class Decision:
    outcome: str  # ready | rejected
    reason: str  # the transition's reason
    verdict: str  # approved, changes_requested, timed_out, too_few_approvals, no_answer
    warning: str | None = None
    approvals: int = 0


def decide(
    rows: Sequence[ReviewRow], *, min_approvals: int | None, timed_out: bool, strict: bool
) -> Decision:
    verdicts = [r.verdict for r in rows]
    approvals = verdicts.count(Verdict.APPROVE)
    if Verdict.REQUEST_CHANGES in verdicts:
        return Decision(REJECTED, "review_rejected", "changes_requested", approvals=approvals)
    if timed_out:
        if strict:
            return Decision(REJECTED, "review_timeout", "timed_out", approvals=approvals)
        return Decision(READY, "review_timed_out", "timed_out", "review_timed_out", approvals)
    if min_approvals is not None and approvals < min_approvals:
        return Decision(REJECTED, "review_too_few_approvals", "too_few_approvals",
                        approvals=approvals)  # fmt: skip
    if approvals == 0:
        return Decision(READY, "review_no_answer", "no_answer", "no_reviewer_approved", 0)
    return Decision(READY, "review_approved", "approved", approvals=approvals)


def comments_text(rows: Sequence[ReviewRow]) -> str:
    """The reviewers' findings for the next attempt's prompt (the prompt sanitizes it)."""
    lines = []
    for r in rows:
        if r.verdict == Verdict.APPROVE or (not r.summary and not r.comments):
            continue
        lines.append(f"- {r.reviewer} ({r.verdict}): {r.summary}")
        lines.extend(f"  - {c.get('path')}:{c.get('line')}: {c.get('body')}" for c in r.comments)
    return "\n".join(lines)
