"""The task state machine (DESIGN §3), defined once and used everywhere."""

from __future__ import annotations

from enum import StrEnum

from fleet_core.errors import BadInputError


class TaskStatus(StrEnum):
    PROPOSED = "proposed"
    SPAWNING = "spawning"
    RUNNING = "running"
    PR_CREATED = "pr_created"
    REVIEWING = "reviewing"
    READY = "ready"
    MERGED = "merged"
    FAILED = "failed"
    RETRYING = "retrying"
    ABANDONED = "abandoned"
    REJECTED = "rejected"
    CANCELLED = "cancelled"


S = TaskStatus

VALID_TRANSITIONS: dict[TaskStatus, frozenset[TaskStatus]] = {
    S.PROPOSED: frozenset({S.SPAWNING, S.CANCELLED}),
    S.SPAWNING: frozenset({S.RUNNING, S.FAILED, S.CANCELLED}),
    # running → ready: a review-type task, whose report is its Definition of Done (no PR).
    S.RUNNING: frozenset({S.PR_CREATED, S.READY, S.FAILED, S.CANCELLED}),
    S.PR_CREATED: frozenset({S.REVIEWING, S.FAILED, S.CANCELLED}),
    S.REVIEWING: frozenset({S.READY, S.REJECTED, S.CANCELLED}),
    S.READY: frozenset({S.MERGED, S.FAILED, S.CANCELLED}),
    S.FAILED: frozenset({S.RETRYING, S.ABANDONED, S.CANCELLED}),
    S.REJECTED: frozenset({S.RETRYING, S.ABANDONED, S.CANCELLED}),
    S.RETRYING: frozenset({S.SPAWNING, S.ABANDONED, S.CANCELLED}),
    S.MERGED: frozenset(),
    S.ABANDONED: frozenset(),
    S.CANCELLED: frozenset(),
}

# No outgoing edges: the only statuses a task can be deleted in.
TERMINAL: frozenset[TaskStatus] = frozenset(s for s, nxt in VALID_TRANSITIONS.items() if not nxt)
# Counts against the operator's concurrency limit.
SLOT_HOLDING: frozenset[TaskStatus] = frozenset(
    {S.PROPOSED, S.SPAWNING, S.RUNNING, S.PR_CREATED, S.REVIEWING, S.RETRYING}
)
# A process is expected to be alive.
LIVE: frozenset[TaskStatus] = frozenset({S.SPAWNING, S.RUNNING})
# Groups for status summaries (`fleet status`, GET /status).
SUMMARY_ACTIVE: frozenset[TaskStatus] = SLOT_HOLDING | {S.READY}
SUMMARY_COMPLETED: frozenset[TaskStatus] = frozenset({S.MERGED})
SUMMARY_FAILED: frozenset[TaskStatus] = frozenset({S.FAILED, S.REJECTED, S.ABANDONED, S.CANCELLED})

# Audit event written in the same transaction as each terminal transition (INV-016).
TERMINAL_AUDIT_EVENT: dict[TaskStatus, str] = {
    S.MERGED: "fleet.completed",
    S.ABANDONED: "fleet.abandoned",
    S.CANCELLED: "fleet.cancelled",
}

# Statuses from which each target may be reached (the inverse of VALID_TRANSITIONS).
SOURCES: dict[TaskStatus, frozenset[TaskStatus]] = {
    target: frozenset(s for s, nxt in VALID_TRANSITIONS.items() if target in nxt)
    for target in TaskStatus
}


def can_transition(from_status: TaskStatus, to_status: TaskStatus) -> bool:
    return to_status in VALID_TRANSITIONS[from_status]


def parse_statuses(text: str | None, field: str) -> list[TaskStatus] | None:
    """`running,failed` → the statuses; an unknown one is bad input naming `field`."""
    if not text:
        return None
    out = []
    for part in text.split(","):
        try:
            out.append(TaskStatus(part.strip()))
        except ValueError:
            known = ", ".join(s.value for s in TaskStatus)
            raise BadInputError(field, f"unknown status {part.strip()!r} ({known})") from None
    return out


assert set(TERMINAL) == set(TERMINAL_AUDIT_EVENT)
assert set(TaskStatus) == SUMMARY_ACTIVE | SUMMARY_COMPLETED | SUMMARY_FAILED
