"""Which events reach an operator, and how an outbox row reads as a message.

Outbox event types are `task.<status>` (every transition), plus `task.stalled`,
`task.paused` (usage limit), `spawn.admitted` (a queued spawn became a task) and
`monitor.unhealthy`. By default a channel sends what needs the operator (NEEDS_OPERATOR);
an operator may choose any of EVENT_TYPES per channel. Events that concern no operator are
queued for ALL_SOVEREIGNS and go to the sovereign operators.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fleet_core.errors import BadInputError
from fleet_core.lifecycle import TaskStatus
from fleet_core.notify.channels import Message
from fleet_core.retry import MANUAL_ONLY

ALL_SOVEREIGNS = "*"  # the outbox operator of an event for every sovereign operator

TASK_EVENTS = tuple(f"task.{s.value}" for s in TaskStatus)
OTHER_EVENTS = ("task.stalled", "task.paused", "spawn.admitted", "monitor.unhealthy")
EVENT_TYPES: tuple[str, ...] = TASK_EVENTS + OTHER_EVENTS
# Configuration classes of a failure: fixing them needs the operator (retrying does not).
CONFIG_FAILURES = MANUAL_ONLY

NEEDS_OPERATOR = frozenset({
    "task.merged", "task.abandoned", "task.cancelled", "task.ready", "task.rejected",
    "task.failed", "task.stalled", "task.paused", "spawn.admitted", "monitor.unhealthy",
})  # fmt: skip

_KIND = {
    "task.merged": "good",
    "task.ready": "good",
    "spawn.admitted": "good",
    "task.abandoned": "bad",
    "task.failed": "bad",
    "task.rejected": "bad",
    "monitor.unhealthy": "bad",
}
_TITLE = {
    "task.merged": "Merged",
    "task.ready": "Ready to merge",
    "task.abandoned": "Abandoned",
    "task.cancelled": "Cancelled",
    "task.rejected": "Review rejected",
    "task.failed": "Failed",
    "task.stalled": "Stalled",
    "task.paused": "Paused (usage limit)",
    "spawn.admitted": "Queued spawn admitted",
    "monitor.unhealthy": "Monitor unhealthy",
}


def validate_events(names: Iterable[str], field: str = "events") -> list[str]:
    out = []
    for name in names:
        name = name.strip()
        if name not in EVENT_TYPES:
            raise BadInputError(field, f"{name[:40]!r} is not an event type "
                                f"(one of {', '.join(EVENT_TYPES)})")  # fmt: skip
        if name not in out:
            out.append(name)
    return out


def wanted(event_type: str, payload: Mapping[str, Any], events: Iterable[str] | None) -> bool:
    """Does a channel with this filter (None: the defaults) send this event?"""
    if events is not None:
        return event_type in set(events)
    if event_type == "task.failed":  # by default only failures a retry cannot fix
        return payload.get("failure_class") in CONFIG_FAILURES
    return event_type in NEEDS_OPERATOR


def message(row: Mapping[str, Any], operator_id: str) -> Message:
    """The message of an outbox row (its payload as `record_terminal` and the others write)."""
    p: Mapping[str, Any] = row["payload"] or {}
    event_type = str(row["event_type"])
    task_id = p.get("task_id")
    pr = p.get("pr_url") or (f"#{p['pr_number']}" if p.get("pr_number") else None)
    summary = p.get("summary") or _summary(event_type, p)
    title = _TITLE.get(event_type, event_type)
    if p.get("description"):
        title = f"{title}: {str(p['description'])[:80]}"
    return Message(
        event_id=str(row["dedup_key"] or row["id"]),
        event_type=event_type,
        operator_id=operator_id,
        task_id=str(task_id) if task_id else None,
        title=title,
        summary=str(summary)[:1000],
        kind=_KIND.get(event_type, "attention"),
        branch=p.get("branch"),
        pr=pr,
    )


def _summary(event_type: str, p: Mapping[str, Any]) -> str:
    if event_type.startswith("task.") and p.get("to_status"):
        text = f"{p.get('from_status') or '?'} → {p['to_status']}"
        if p.get("reason"):
            text += f": {p['reason']}"
        if p.get("retry_count"):
            text += f" (retry {p['retry_count']})"
        return text
    return str(p.get("reason") or event_type)
