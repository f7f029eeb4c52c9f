"""Failure judging, for the monitor: what an attempt leaves for its failure context and the
retry prompt (the log tail of this attempt, without the prompt's echo; the diff against its
base) and the verdict on an agent that ended (failures.classify: exit status, log tail, the
adapter's patterns)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet_core.failures import CONFIG_REASONS, Verdict, classify
from fleet_core.models import TaskRecord
from fleet_core.publishing import Publisher
from fleet_core.retry import failure_context
from fleet_core.runtime import git as g
from fleet_core.runtime.agent_profiles import profile_for
from fleet_core.runtime.echo import strip_echo
from fleet_core.runtime.handles import ExitStatus

if TYPE_CHECKING:
    from fleet_core.conductor import Conductor

log = logging.getLogger(__name__)

LOG_TAIL_LINES = 60
ATTEMPT_START = "fleet: starting "  # the launcher's first line: an attempt's output begins
DIFF_KEEP_CHARS = 8000


class Judge:
    def __init__(self, conductor: Conductor, publisher: Publisher) -> None:
        self.c = conductor
        self.publisher = publisher

    async def verdict(
        self, rec: TaskRecord, status: ExitStatus | None, tail: str | None = None
    ) -> Verdict:
        tail = await self.tail(rec) or "" if tail is None else tail
        return classify(
            profile_for(rec.agent_type),
            exit_code=status.code if status else None,
            oom=bool(status and status.oom),
            tail=tail,
            push_failed=rec.id in self.publisher.errors,
            now=datetime.now(UTC),
            not_found=bool(status and status.error and "No such file" in status.error),
        )

    async def ended(
        self, rec: TaskRecord, status: ExitStatus | None
    ) -> tuple[Verdict, dict[str, Any]]:
        """The verdict on an agent that ended without a PR, and its failure context."""
        tail = await self.tail(rec) or ""
        verdict = await self.verdict(rec, status, tail)
        reason, resume = verdict.reason, verdict.resume_at
        ctx = failure_context(
            reason,
            previous=rec,
            exit_code=status.code if status else None,
            signal=status.signal if status else None,
            oom=(reason == "oom") or None,
            message=verdict.message,
            hint=verdict.hint,
            retried=False if reason in CONFIG_REASONS else None,
            log_tail=tail or None,
            diff=await self.diff(rec),
            resume_at=resume.isoformat() if resume else None,
            push_error=self.publisher.errors.pop(rec.id, None) if reason == "push_failed" else None,
        )
        return verdict, ctx

    async def diff(self, rec: TaskRecord) -> str | None:
        """What the attempt changed against its base (committed or not), for the retry prompt
        (which sanitizes and cuts it to 2,000 characters)."""
        if not rec.worktree_path or not Path(rec.worktree_path).is_dir():
            return None
        worktree = Path(rec.worktree_path)
        try:
            repo = Path(rec.repository)
            base = await g.base_ref(repo, rec.base_branch or await g.default_branch(repo))
            sha = (await g.git(repo, "rev-parse", "--verify", base)).stdout.strip()
            out = await self.c.runtime.diff_against(repo, worktree, sha)
        except Exception as exc:
            log.warning("no diff for the failure context: %s", exc, extra={"task": str(rec.id)})
            return None
        return out[:DIFF_KEEP_CHARS] or None

    async def tail(self, rec: TaskRecord) -> str | None:
        """The end of the agent's output, without what it echoed of its prompt."""
        try:
            text = await self.c.runtime.logs(rec.id, LOG_TAIL_LINES * 4)
            keys = self.c.runtime.prompt_hashes(rec.id)
            lines = strip_echo(text, keys).splitlines()
            starts = [i for i, ln in enumerate(lines) if ln.startswith(ATTEMPT_START)]
            lines = lines[starts[-1] :] if starts else lines  # this attempt's output only
            return "\n".join(lines[-LOG_TAIL_LINES:]) or None
        except Exception as exc:
            log.warning("no log tail for the failure context: %s", exc, extra={"task": str(rec.id)})
            return None
