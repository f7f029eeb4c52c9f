"""How an agent's end is classified: from its exit status, its log tail and the adapter's
knowledge of its CLI (runtime/agent_profiles.py), into exactly these reasons.

The three configuration reasons are never retried automatically: the same setup fails the
same way. The task is `failed` at once with the CLI's own message and what to do; the
operator retries by hand (`fleet retry`) after fixing it. `agent_network` and the others are
retried with backoff; `usage_limit` waits for the stated reset without spending a retry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from fleet_core.retry import MANUAL_ONLY, usage_limit_resume
from fleet_core.runtime.agent_profiles import AUTH, CONFIG, NETWORK, USAGE, Profile

NOT_INSTALLED = "agent_not_installed"
OOM = "oom"
IDLE = "agent_idle"
TIMEOUT = "timeout"
NO_PR = "exited_without_pull_request"
EXITED = "agent_exited"
PUSH_FAILED = "push_failed"
REASONS = (NOT_INSTALLED, AUTH, CONFIG, NETWORK, USAGE, OOM, IDLE, TIMEOUT, NO_PR, EXITED,
           PUSH_FAILED)  # fmt: skip
CONFIG_REASONS = MANUAL_ONLY
assert frozenset({NOT_INSTALLED, AUTH, CONFIG}) == CONFIG_REASONS
SCAN_LINES = 40  # the end of the tail the patterns are matched against

GENERIC_FIXES = {
    NOT_INSTALLED: "install the agent's CLI on the engine's PATH, then `fleet retry`",
    AUTH: "give the agent its credentials (`fleet secrets set NAME`, or `fleet agent login "
          "AGENT`), then `fleet retry`",
    CONFIG: "fix the agent's command or model ([agents.<type>] in fleet.toml), then `fleet retry`",
}  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    reason: str
    message: str | None = None  # the CLI's own line that told
    hint: str | None = None  # what the operator does
    resume_at: datetime | None = None


def matching(profile: Profile, lines: list[str]) -> tuple[str, str] | None:
    """(reason, the line) of the last line a pattern of the CLI recognises."""
    for line in reversed(lines[-SCAN_LINES:]):
        for pattern in profile.patterns:
            if pattern.regex.search(line):
                return pattern.reason, line.strip()
    return None


def hint_for(profile: Profile, reason: str) -> str | None:
    fix = profile.fixes.get(reason) or GENERIC_FIXES.get(reason)
    if fix and reason in CONFIG_REASONS and "fleet retry" not in fix:
        fix += ", then `fleet retry`"
    return fix


def classify(
    profile: Profile,
    *,
    exit_code: int | None,
    oom: bool,
    tail: str,
    push_failed: bool,
    now: datetime,
    not_found: bool = False,
) -> Verdict:
    """The reason an agent that ended without a pull request ended."""
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    if not_found:
        return Verdict(
            NOT_INSTALLED, lines[-1] if lines else None, hint_for(profile, NOT_INSTALLED)
        )
    found = matching(profile, lines)
    if (found is not None and found[0] == USAGE) or (found is None and exit_code != 0):
        resume = usage_limit_resume("\n".join(lines[-SCAN_LINES:]), now)
        if resume is not None:
            return Verdict(USAGE, found[1] if found else None, None, resume)
    if oom or "out of memory" in tail.lower():
        return Verdict(OOM)
    by_code = profile.exit_codes.get(exit_code) if exit_code else None
    reason = by_code or (found[0] if found else None)
    if reason in (AUTH, CONFIG, NETWORK):
        message = found[1] if found else (lines[-1] if lines else None)
        return Verdict(reason, message, hint_for(profile, reason))
    if exit_code == 0:
        return Verdict(PUSH_FAILED if push_failed else NO_PR)
    return Verdict(EXITED, lines[-1] if lines else None)


def idle_reason(profile: Profile, tail: str) -> Verdict:
    """An agent that made no progress: `agent_network` when its last words say so."""
    lines = [ln for ln in tail.splitlines() if ln.strip()]
    found = matching(profile, lines)
    if found is not None and found[0] == NETWORK:
        return Verdict(NETWORK, found[1])
    if profile.network_noise and profile.noise and any(profile.noise.search(ln) for ln in lines):
        return Verdict(NETWORK, next(ln for ln in reversed(lines) if profile.noise.search(ln)))
    return Verdict(IDLE, lines[-1].strip() if lines else None)
