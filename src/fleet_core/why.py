"""Why a task is where it is, in one line ("timed out after 5 min; retried once; abandoned"),
and every attempt's cause kept in `failure_context.attempts` (the context itself stays the
object the retry engine reads: `reason`, `prompt_budget`, ...)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.retry import NOT_RETRIED

MAX_DETAIL = 300
# The big texts of a failure context: shown in their own sections, never inline.
SECTIONS = (("log_tail", "log tail"), ("output", "output"), ("ci_log", "CI log"),
            ("diff", "diff"))  # fmt: skip
_SECTION_KEYS = {k for k, _ in SECTIONS} | {"attempts"}


def cause(ctx: Mapping[str, Any], timeout_minutes: int | None = None) -> str:
    """One attempt's cause in a few words."""
    reason = str(ctx.get("reason") or "failed")
    if reason == "timeout":
        minutes = ctx.get("timeout_minutes", timeout_minutes)
        return f"timed out after {minutes} min" if minutes else "timed out"
    if reason == "ci_failed":
        checks = ctx.get("failing_checks") or []
        return "CI failed" + (f" ({', '.join(map(str, checks[:3]))})" if checks else "")
    if reason == "ci_no_checks":
        from fleet_core.ci_start import cause as no_checks

        return no_checks(dict(ctx))
    if reason == "dod_unmet":
        unmet = [str(u).lstrip("✗ ") for u in ctx.get("dod_unmet") or []]
        return "Definition of Done not met" + (f" ({_short('; '.join(unmet))})" if unmet else "")
    if reason == "dod_setup":
        return (
            "reviewed and approved, but the repository has no CI: set `ci` in its "
            ".fleet.toml (or `ci = false` on purpose)"
        )
    if reason == "spawn_failed":
        message = str(ctx.get("error") or ctx.get("message") or "").strip()
        return f"could not start: {_short(message)}" if message else "could not start"
    if reason == "agent_exited":
        code, sig = ctx.get("exit_code"), ctx.get("signal")
        return f"the agent exited with {sig}" if sig else f"the agent exited with code {code}"
    return {
        "oom": "ran out of memory",
        "usage_limit": "hit the model's usage limit",
        "push_failed": "its commits could not be pushed",
        "exited_without_pull_request": "the agent ended without commits for a pull request",
        "conductor_restart": "the engine restarted while it ran",
        "spawn_interrupted": "its start was interrupted",
    }.get(reason, reason.replace("_", " "))


def _short(text: str) -> str:
    first = text.splitlines()[0] if text else ""
    return first if len(first) <= 120 else first[:119] + "…"


def attempt_entry(ctx: Mapping[str, Any], attempt: int) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "attempt": attempt,
        "reason": ctx.get("reason"),
        "cause": cause(ctx),
        "at": ctx.get("at") or datetime.now(UTC).isoformat(),
    }
    for key in ("exit_code", "signal", "runtime_step", "failing_checks"):
        if ctx.get(key) is not None:
            entry[key] = ctx[key]
    return entry


def with_attempts(ctx: Mapping[str, Any], previous: TaskRecord) -> dict[str, Any]:
    """`ctx` (the failure of `previous`'s current attempt) with every attempt's cause so far:
    the earlier ones from `previous.failure_context`, then this one."""
    old = previous.failure_context or {}
    attempt = previous.retry_count + 1
    kept = [a for a in old.get("attempts") or [] if isinstance(a, dict)]
    kept = [a for a in kept if a.get("attempt") != attempt]
    entry = attempt_entry(ctx, attempt)
    if old.get("operator_note") and previous.retry_count:  # the note this attempt was given
        entry["operator_note"] = old["operator_note"]
    return {**ctx, "attempts": [*kept, entry]}


def _retried(n: int) -> str:
    return {0: "", 1: "retried once", 2: "retried twice"}.get(n, f"retried {n} times")


def why(rec: TaskRecord) -> str:
    """One line: the cause (when it failed), the retries, where it is now."""
    ctx = rec.failure_context or {}
    status = rec.status
    parts: list[str] = []
    failed_now = status in (TaskStatus.FAILED, TaskStatus.ABANDONED, TaskStatus.REJECTED)
    if ctx.get("reason") and (failed_now or rec.retry_count or status is TaskStatus.CANCELLED):
        parts.append(cause(ctx, rec.timeout_minutes))
    if rec.retry_count:
        parts.append(_retried(rec.retry_count))
    parts.append(_where(rec))
    return "; ".join(p for p in parts if p)


def _where(rec: TaskRecord) -> str:
    s, pr = rec.status, f"PR #{rec.pr_number}" if rec.pr_number else "no PR"
    ci = rec.ci_status.value if rec.ci_status else "unknown"
    if s in (TaskStatus.FAILED, TaskStatus.REJECTED):
        left = rec.max_retries - rec.retry_count
        was = "rejected; " if s is TaskStatus.REJECTED else ""
        if left > 0 and (rec.failure_context or {}).get("reason") in NOT_RETRIED:
            return f"{was}not retried by itself: `fleet retry` once it is fixed"
        return was + (f"will retry ({left} left)" if left > 0 else "no retries left")
    if s is TaskStatus.ABANDONED:
        return "abandoned"
    if s is TaskStatus.READY:
        return f"ready to merge: {pr}, CI {ci}"
    if s is TaskStatus.PR_CREATED:
        return f"{pr} open, CI {ci}"
    if s is TaskStatus.MERGED:
        return f"merged ({pr})"
    if s is TaskStatus.RUNNING:
        return "running" if not rec.retry_count else f"running attempt {rec.retry_count + 1}"
    return s.value.replace("_", " ")


def failure_fields(ctx: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The failure context's small fields, for a key/value listing (big texts go to
    `failure_sections`, the attempts to their own list)."""
    out: list[tuple[str, str]] = []
    for key, value in ctx.items():
        if key in _SECTION_KEYS or value is None or value in ("", [], {}):
            continue
        if isinstance(value, dict | list):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) if isinstance(
                value, dict) else ", ".join(map(str, value))  # fmt: skip
        out.append((key, _short(str(value))))
    return out


def failure_sections(ctx: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(title, text) of the big texts: log tail, output, CI log, diff."""
    return [(title, str(ctx[key])) for key, title in SECTIONS if ctx.get(key)]


def attempt_lines(ctx: Mapping[str, Any]) -> list[str]:
    return [
        f"attempt {a.get('attempt')}: {a.get('cause') or a.get('reason')} ({a.get('at', '')[:19]})"
        for a in ctx.get("attempts") or []
        if isinstance(a, dict)
    ]
