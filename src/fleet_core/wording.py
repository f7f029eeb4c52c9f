"""Plain words for task states in messages people read (the CLI, the API, the console): "is
already cancelled", not "cannot move from cancelled to cancelled". Keyed by status value so
that `errors` can use it without importing the state machine."""

from __future__ import annotations

# "task 1a2b3c4d ..." as it stands now.
NOW = {
    "proposed": "is waiting to start",
    "spawning": "is starting",
    "running": "is running",
    "pr_created": "has a pull request waiting for CI",
    "reviewing": "is in review",
    "ready": "is ready to merge",
    "merged": "is already merged",
    "failed": "has failed",
    "retrying": "is about to be retried",
    "abandoned": "was abandoned",
    "rejected": "was rejected in review",
    "cancelled": "is already cancelled",
}
# "... so it cannot ..." for the status a change was asked to reach.
CANNOT = {
    "proposed": "be proposed again",
    "spawning": "start",
    "running": "run",
    "pr_created": "get a pull request",
    "reviewing": "go to review",
    "ready": "become ready",
    "merged": "be merged",
    "failed": "fail",
    "retrying": "be retried",
    "abandoned": "be abandoned",
    "rejected": "be rejected",
    "cancelled": "be stopped",
}
ENDED = frozenset({"merged", "abandoned", "cancelled"})
RETRYABLE = frozenset({"failed", "rejected"})


def now(status: str) -> str:
    return NOW.get(status, f"is {status}")


def refusal(task: str, from_status: str, to_status: str, *, attempts: int | None = None) -> str:
    """Why task `task` (an id or short id) cannot go from `from_status` to `to_status`."""
    if to_status == "cancelled" and from_status in ENDED:
        return f"task {task} {now(from_status)}: there is nothing to stop"
    if to_status == "retrying" and from_status not in RETRYABLE:
        head = f"task {task}: can only retry a failed or rejected task; this one "
        if from_status == "abandoned":
            after = f" after {attempts} attempt{'s' if attempts != 1 else ''}" if attempts else ""
            return f"{head}was abandoned{after}: use `fleet spawn` again"
        if from_status == "cancelled":
            return f"{head}was cancelled: use `fleet spawn` again"
        return head + now(from_status)
    return f"task {task} {now(from_status)}, so it cannot {CANNOT.get(to_status, to_status)}"
