"""The retry engine: a failed (or rejected) task is tried again while its budget lasts.

Automatic retries wait min(base·2^n + jitter, cap) after the failure (n = retries so far);
`fleet retry` goes at once. Each retry takes a slot through the governor (it may wait for
one), counts against the budget with INV-017's guard and moves to `retrying` in one
transaction, then relaunches the agent in the task's own worktree with a prompt that carries
the previous failure (sanitized). An agent killed by the OOM killer (137, "out of memory")
gets 0.75 of the last prompt budget. A usage-limit or quota message in the agent's output
pauses the task until the stated reset without spending a retry. A spent budget abandons
the task. A configuration failure (`agent_not_installed`, `agent_auth`, `agent_config`: the
same setup fails the same way) is never retried automatically: the operator fixes the cause and
runs `fleet retry`.
Cancelled tasks are never retried (they have no way out of `cancelled`).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from fleet_core.enrichment import DEFAULT_BUDGET
from fleet_core.errors import (
    FleetError,
    InvalidTransitionError,
    RepositoryNotFoundError,
    RetryBudgetSpentError,
    SpawnDeniedError,
    StaleVersionError,
)
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord, Tier

if TYPE_CHECKING:
    from fleet_core.conductor import Conductor

RETRYABLE = (TaskStatus.FAILED, TaskStatus.REJECTED)
OOM_FACTOR = 0.75
MIN_BUDGET = 1000
USAGE_LIMIT = re.compile(r"usage limit|rate limit|quota exceeded|\b429\b", re.IGNORECASE)
_IN = re.compile(r"(?:try again|retry|resets?)\s+in\s+(\d+)\s*(s|sec|second|m|min|minute|h|hour)",
                 re.IGNORECASE)  # fmt: skip
_AT = re.compile(r"resets?\s+(?:at\s+)?(\d{1,2}):(\d{2})", re.IGNORECASE)
DEFAULT_PAUSE = timedelta(minutes=15)
# Failures a retry with the same setup cannot fix: `fleet retry` only, after the fix.
MANUAL_ONLY = frozenset({"agent_not_installed", "agent_auth", "agent_config"})
# Also the repository's own: a GitHub PR whose checks never start (fleet_core.ci_start), a
# Definition of Done that only the repository's setup keeps unmet (review/dod.py: no CI).
NOT_RETRIED = MANUAL_ONLY | {"ci_no_checks", "dod_setup"}


@dataclass(frozen=True)
class RetryPolicy:
    base_s: float = 30.0
    max_s: float = 120.0
    jitter_s: float = 1.0

    def delay(self, retries_so_far: int) -> float:
        jitter = random.uniform(0, self.jitter_s)  # noqa: S311 (spreading retries, not crypto)
        return min(self.base_s * float(2**retries_so_far) + jitter, self.max_s)


def usage_limit_resume(text: str, now: datetime) -> datetime | None:
    """When the agent's output says it hit a usage limit: the reset it names, else 15 min."""
    if not USAGE_LIMIT.search(text):
        return None
    if m := _IN.search(text):
        unit = m[2][0].lower()
        seconds = int(m[1]) * {"s": 1, "m": 60, "h": 3600}[unit]
        return now + timedelta(seconds=seconds)
    if m := _AT.search(text):
        at = now.replace(hour=int(m[1]) % 24, minute=int(m[2]), second=0, microsecond=0)
        return at if at > now else at + timedelta(days=1)
    return now + DEFAULT_PAUSE


def failure_context(reason: str, *, previous: TaskRecord, **fields: Any) -> dict[str, Any]:
    """The failure context the monitor stores; keeps the prompt budget of the attempt."""
    budget = (previous.failure_context or {}).get("prompt_budget", DEFAULT_BUDGET)
    doc: dict[str, Any] = {
        "reason": reason,
        "previous_status": previous.status.value,
        "attempt": previous.retry_count + 1,
        "prompt_budget": budget,
        "at": datetime.now(UTC).isoformat(),
    }
    doc.update({k: v for k, v in fields.items() if v is not None})
    return doc


class RetryEngine:
    def __init__(self, conductor: Conductor, policy: RetryPolicy | None = None) -> None:
        self.conductor = conductor
        self.policy = policy or RetryPolicy()

    def due_at(self, rec: TaskRecord) -> datetime:
        ctx = rec.failure_context or {}
        if ctx.get("reason") == "usage_limit" and ctx.get("resume_at"):
            return datetime.fromisoformat(str(ctx["resume_at"]))
        return rec.updated_at + timedelta(seconds=self.policy.delay(rec.retry_count))

    async def run_due(self, tasks: list[TaskRecord], now: datetime | None = None) -> int:
        """Retry the failed tasks of this host whose wait is over; returns how many started."""
        now = now or datetime.now(UTC)
        started = 0
        for rec in tasks:
            if rec.status not in RETRYABLE or rec.host_id != self.conductor.runtime.host_id:
                continue
            if (rec.failure_context or {}).get("reason") in NOT_RETRIED:
                continue  # the operator fixes the cause, then `fleet retry`
            spent = rec.retry_count >= rec.max_retries and not _paused(rec)
            if not spent and self.due_at(rec) > now:
                continue
            try:
                await self.retry(rec)
                started += 1
            except (SpawnDeniedError, RetryBudgetSpentError):
                continue  # no slot yet: next cycle; or abandoned just now
            except (StaleVersionError, InvalidTransitionError):
                continue  # another engine (or the operator) acted on it first
            except RepositoryNotFoundError:
                continue  # its repository was revoked: it stays failed (`fleet retry` says why)
        return started

    async def retry(
        self, rec: TaskRecord, tier: Tier | None = None, *, note: str | None = None
    ) -> TaskRecord:
        """One more attempt now (the caller decided the wait is over). `note`: the operator's
        words for the next attempt's prompt (`fleet retry ID --note TEXT`)."""
        if rec.status not in RETRYABLE:
            raise InvalidTransitionError(
                str(rec.id), rec.status.value, "retrying", attempts=rec.retry_count + 1
            )
        c = self.conductor
        await c.require_granted(rec)  # a revoked repository takes no more attempts
        ctx = dict(rec.failure_context or {})
        paused = _paused(rec)
        budget = int(ctx.get("prompt_budget", DEFAULT_BUDGET))
        if ctx.get("oom"):
            budget = max(MIN_BUDGET, int(budget * OOM_FACTOR))
        ctx["prompt_budget"] = budget
        if note is not None:
            ctx["operator_note"] = note
        update: dict[str, Any] = {"failure_context": ctx}
        fresh = await self._fresh_branch(rec)
        if fresh is not None:
            update["branch"] = fresh
        new = await c.governor.readmit(
            rec,
            tier=tier or await c.tier_of(rec.operator_id),
            count_failure=not paused,
            update=update,
        )
        if new is None:
            await c.moves.move(
                rec,
                TaskStatus.ABANDONED,
                reason="retry_budget_exhausted",
                audit_detail={"retries": rec.retry_count, "max_retries": rec.max_retries},
            )
            raise RetryBudgetSpentError(
                f"task {rec.short_id} used its {rec.max_retries} retries and was abandoned: "
                "use `fleet spawn` again"
            )
        await c.moves.announce(
            rec,
            new,
            reason="usage_limit_over" if paused else "retry",
            retry_count=new.retry_count,
            prompt_budget=budget,
            oom=bool(ctx.get("oom")),
        )
        return await c.relaunch(new, budget)

    async def _fresh_branch(self, rec: TaskRecord) -> str | None:
        """A new branch name when the previous attempt never created its branch (it failed
        before its checkout was made, or its checkout is gone and nothing was published):
        the next attempt starts clean instead of meeting a half-made name."""
        from pathlib import Path

        from fleet_core.runtime import git as g

        checkout = self.conductor.runtime.paths.worktrees / str(rec.id)
        if checkout.is_dir():
            return None
        try:
            repo = (await g.repo_paths(Path(rec.repository)))[0]
            if await g.ref_exists(repo, f"refs/heads/{rec.branch}"):
                return None
        except (FleetError, OSError):
            return None  # the start says what is wrong with the repository
        stem = re.sub(r"-r\d+$", "", rec.branch)
        return f"{stem}-r{rec.retry_count + 2}"[:128]


def _paused(rec: TaskRecord) -> bool:
    return (rec.failure_context or {}).get("reason") == "usage_limit"
