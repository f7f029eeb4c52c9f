"""A GitHub PR whose checks never start (no workflow, Actions off, a check suite that never
ran) would stay `pending` forever while its task holds a slot. After `ci_start_minutes`
(default 10) of a PR with no check at all, the monitor settles it: `ci: no checks`.

What the task does then follows the Definition of Done: where its task type asks for CI (the
default), a PR without checks is CI not configured, and the task fails with `ci_no_checks`,
which no automatic retry can fix (the repository needs CI, or `dod.<type>.ci = false`;
then `fleet retry`). Where the DoD says `ci = false`, the review begins as after a pass.
"""

from __future__ import annotations

from datetime import datetime

from fleet_core.forge.base import CiReport
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import CiStatus, TaskRecord

NO_CHECKS = "ci_no_checks"


def no_checks_for(rec: TaskRecord, ci: CiReport, now: datetime, limit_s: float) -> bool:
    """True when `rec`'s PR has had no check at all for longer than `limit_s` seconds, counted
    from the task's last change (its PR found, or its CI state last recorded)."""
    if rec.status is not TaskStatus.PR_CREATED or ci.state is not CiStatus.PENDING:
        return False
    return ci.no_checks and (now - rec.updated_at).total_seconds() > limit_s


def cause(ctx: dict[str, object]) -> str:
    minutes = ctx.get("ci_start_minutes")
    within = f" within {minutes:g} min" if isinstance(minutes, int | float) else ""
    return f"ci: no checks (none started on the PR{within}: CI not configured)"
