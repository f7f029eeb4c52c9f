"""The review of a task whose CI passed: reviewers in parallel, verdicts stored, the task
moved on.

`begin` moves the task pr_created → reviewing (its `review_status` says which head, attempt
and reviewers, and when the review started) and starts the review beside the monitor's cycle;
`ensure` restarts the review of a task found in `reviewing` with none running here (an engine
that restarted: verdicts already stored for the head are kept, the deadline is the stored
start's). Reviewers are not tasks: no operator slot, a fleet-wide semaphore
(`review_concurrency`). Each answer is parsed against the schema; one that is not valid is
asked once more, then counts as `comment`, as does a reviewer that crashed or never answered
before the review's deadline."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fleet_core.db.database import Tenant
from fleet_core.errors import InvalidTransitionError, StaleVersionError
from fleet_core.forge.base import ForgeError
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.retry import failure_context
from fleet_core.review.aggregate import READY, Decision, comments_text, decide
from fleet_core.review.dod import DOD_SETUP, check_dod
from fleet_core.review.factory import build_reviewer
from fleet_core.review.prompt import review_prompt
from fleet_core.review.reviewers import Reviewer, ReviewRequest
from fleet_core.review.settings import ReviewerSpec, ReviewSettings
from fleet_core.review.store import ReviewRow, ReviewStore
from fleet_core.review.verdict import InvalidAnswer, Verdict, parse_answer

if TYPE_CHECKING:
    from fleet_core.conductor import Conductor

log = logging.getLogger(__name__)
S = TaskStatus
STALE_TRIES = 8


class ReviewPipeline:
    def __init__(self, conductor: Conductor, settings: ReviewSettings) -> None:
        self.c = conductor
        self.settings = settings
        self.store = ReviewStore(conductor.db)
        self.admin = Tenant.admin()
        self._gate = asyncio.Semaphore(settings.concurrency)
        self._jobs: dict[UUID, asyncio.Task[None]] = {}
        self.errors = 0
        self.last_error: str | None = None

    # -- starting ------------------------------------------------------------------------------

    async def begin(self, rec: TaskRecord, head_sha: str | None) -> TaskRecord | None:
        """pr_created → reviewing, and the review started; None when the task moved first."""
        head = head_sha or f"attempt-{rec.retry_count + 1}"
        specs = self.settings.reviewers_for(rec)
        status = {
            "state": "running",
            "head_sha": head,
            "attempt": rec.retry_count + 1,
            "started_at": datetime.now(UTC).isoformat(),
            "expected": len(specs),
            "done": 0,
            "reviewers": [{"reviewer": s.focus, "kind": s.kind} for s in specs],
        }
        try:
            moved = await self.c.moves.move(
                rec, S.REVIEWING, reason="ci_passed", update={"review_status": status}
            )
        except (StaleVersionError, InvalidTransitionError):
            return None
        self.ensure(moved)
        return moved

    def ensure(self, rec: TaskRecord) -> None:
        """The review of a `reviewing` task of this host runs here (started if it does not)."""
        if rec.status is not S.REVIEWING or rec.host_id != self.c.runtime.host_id:
            return
        if rec.id in self._jobs:
            return
        job = asyncio.create_task(self._review(rec.id), name=f"fleet-review-{rec.id}")
        self._jobs[rec.id] = job
        job.add_done_callback(functools.partial(self._done, rec.id))

    def running(self) -> list[UUID]:
        return list(self._jobs)

    async def wait_idle(self) -> None:
        while self._jobs:
            await asyncio.gather(*list(self._jobs.values()), return_exceptions=True)

    async def stop(self) -> None:
        jobs = list(self._jobs.values())
        for job in jobs:
            job.cancel()
        await asyncio.gather(*jobs, return_exceptions=True)

    def _done(self, task_id: UUID, job: asyncio.Task[None]) -> None:
        self._jobs.pop(task_id, None)
        if job.cancelled():
            return
        exc = job.exception()
        if exc is not None:
            self.errors += 1
            self.last_error = f"review of {str(task_id)[:8]}: {type(exc).__name__}: {exc}"
            log.error("a review failed", exc_info=exc, extra={"task": str(task_id)})

    # -- the review ----------------------------------------------------------------------------

    async def _review(self, task_id: UUID) -> None:
        rec = await self._get(task_id)
        if rec is None or rec.status is not S.REVIEWING:
            return
        info = dict(rec.review_status or {})
        head = str(info.get("head_sha") or f"attempt-{rec.retry_count + 1}")
        started = _parse_time(info.get("started_at")) or datetime.now(UTC)
        specs = self.settings.reviewers_for(rec)
        if not specs:
            await self._finish(rec, [], None)
            return
        tenant = Tenant.operator(rec.operator_id)
        kept = {r.reviewer: r for r in await self.store.for_task(tenant, rec.id, head_sha=head)}
        diff = await self._diff(rec)
        missing = [s for s in specs if s.focus not in kept]
        lead = specs[0].focus
        jobs = {
            asyncio.create_task(self._one(rec, head, spec, spec.focus == lead, diff)): spec
            for spec in missing
        }
        elapsed = (datetime.now(UTC) - started).total_seconds()
        timeout = max(0.0, self.settings.timeout_s - elapsed)
        timed_out: list[ReviewerSpec] = []
        if jobs:
            _done, pending = await asyncio.wait(jobs, timeout=timeout)
            for job in pending:
                job.cancel()
                timed_out.append(jobs[job])
            await asyncio.gather(*pending, return_exceptions=True)
            for spec in timed_out:
                row = ReviewRow(spec.focus, spec.kind, spec.model or spec.kind, Verdict.COMMENT,
                                summary="no answer before the review's deadline",
                                error="timed out", attempt=rec.retry_count + 1,
                                head_sha=head)  # fmt: skip
                await self.store.save(rec.id, rec.operator_id, row)
        rows = await self.store.for_task(tenant, rec.id, head_sha=head)
        await self._finish(rec, rows, head, timed_out=bool(timed_out))

    async def _one(
        self, rec: TaskRecord, head: str, spec: ReviewerSpec, lead: bool, diff: str
    ) -> None:
        """One reviewer, under the fleet-wide semaphore: its verdict stored (as `comment`
        when it crashed or answered twice with something that is not the schema's)."""
        async with self._gate:
            request = ReviewRequest(
                focus=spec.focus,
                description=rec.description,
                diff=diff,
                prompt=review_prompt(spec.focus, rec.description, diff),
                attempt=rec.retry_count + 1,
                head_sha=head,
                repository=rec.repository,
                branch=rec.branch,
                operator_id=rec.operator_id,
                agent_type=rec.agent_type.value,
            )
            begin = time.monotonic()
            try:
                reviewer = build_reviewer(spec, self.c, self.settings, lead=lead)
            except Exception as exc:
                row = ReviewRow(
                    spec.focus,
                    spec.kind,
                    spec.model or spec.kind,
                    Verdict.COMMENT,
                    summary="the reviewer could not be started",
                    error=str(exc),
                )
            else:
                row = await self._ask(reviewer, request)
            row = dataclasses.replace(
                row,
                attempt=rec.retry_count + 1,
                head_sha=head,
                duration_ms=int((time.monotonic() - begin) * 1000),
            )
        if await self.store.save(rec.id, rec.operator_id, row):
            await self._progress(rec.id)
            await self._post(rec, row)

    async def _ask(self, reviewer: Reviewer, request: ReviewRequest) -> ReviewRow:
        def row(verdict: str, summary: str, **more: Any) -> ReviewRow:
            return ReviewRow(reviewer.focus, reviewer.kind, reviewer.model, verdict, summary,
                             **more)  # fmt: skip

        cost: float | None = None
        problem = ""
        for _ in range(2):  # an answer that is not the schema's: asked once more
            try:
                raw = await reviewer.ask(request)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("a reviewer failed: %s", exc, extra={"reviewer": reviewer.focus})
                error = f"{type(exc).__name__}: {exc}"[:2000]
                return row(Verdict.COMMENT, "the reviewer failed", error=error)
            if raw.cost_usd is not None:
                cost = (cost or 0.0) + raw.cost_usd
            try:
                answer = parse_answer(raw.text)
            except InvalidAnswer as exc:
                problem = str(exc)
                continue
            comments = [c.model_dump() for c in answer.comments]
            return row(answer.verdict.value, answer.summary, comments=comments, cost_usd=cost)
        return row(
            Verdict.COMMENT,
            "the reviewer's answer was not valid JSON for the schema",
            error=f"invalid answer twice: {problem}"[:2000],
            cost_usd=cost,
        )

    async def _diff(self, rec: TaskRecord) -> str:
        if not rec.pr_number:
            return ""
        try:
            forge = await self.c.forges.for_repo(Path(rec.repository))
            return await forge.diff(Path(rec.repository), rec.pr_number)
        except (ForgeError, OSError) as exc:
            log.warning("no diff for the review: %s", exc, extra={"task": str(rec.id)})
            return ""

    async def _post(self, rec: TaskRecord, row: ReviewRow) -> None:
        """The verdict as a review of the PR, with its line comments (GitHub: a PR review;
        the local forge keeps it with the PR)."""
        if not rec.pr_number:
            return
        body = f"**fleet review ({row.reviewer}, {row.kind} {row.model}): {row.verdict}**"
        try:
            forge = await self.c.forges.for_repo(Path(rec.repository))
            await forge.review(Path(rec.repository), rec.pr_number, verdict=row.verdict,
                               body=f"{body}\n\n{row.summary}", comments=row.comments,
                               head_sha=row.head_sha)  # fmt: skip
        except (ForgeError, OSError, KeyError, ValueError) as exc:
            log.warning("review comment not posted: %s", exc, extra={"task": str(rec.id)})

    # -- the task's record ---------------------------------------------------------------------

    async def _get(self, task_id: UUID) -> TaskRecord | None:
        from fleet_core.registry import TaskRegistry

        return await TaskRegistry(self.c.db, self.admin).find(task_id)

    async def _progress(self, task_id: UUID) -> None:
        """`done` in review_status counts the verdicts stored (the table's `reviewing 2/3`)."""
        from fleet_core.registry import TaskRegistry

        registry = TaskRegistry(self.c.db, self.admin)
        for _ in range(STALE_TRIES):
            rec = await registry.find(task_id)
            if rec is None or rec.status is not S.REVIEWING:
                return
            info = dict(rec.review_status or {})
            rows = await self.store.for_task(self.admin, task_id,
                                             head_sha=str(info.get("head_sha")))  # fmt: skip
            info["done"] = len(rows)
            with contextlib.suppress(StaleVersionError):
                await registry.update_metadata(task_id, {"review_status": info},
                                               expected_version=rec.version)  # fmt: skip
                return

    async def _finish(
        self, rec: TaskRecord, rows: list[ReviewRow], head: str | None, *, timed_out: bool = False
    ) -> None:
        if not rows and head is None:
            decision = Decision(READY, "review_skipped", "skipped", "no_reviewer_configured")
        else:
            decision = decide(rows, min_approvals=self.settings.min_approvals,
                              timed_out=timed_out, strict=self.settings.strict)  # fmt: skip
        from fleet_core.registry import TaskRegistry

        registry = TaskRegistry(self.c.db, self.admin)
        for _ in range(STALE_TRIES):
            current = await registry.find(rec.id)
            if current is None or current.status is not S.REVIEWING:
                return  # cancelled, or another engine finished it
            info = dict(current.review_status or {})
            info.update({
                "state": "done", "verdict": decision.verdict, "approvals": decision.approvals,
                "done": len(rows), "finished_at": datetime.now(UTC).isoformat(),
                "reviewers": [{"reviewer": r.reviewer, "kind": r.kind, "verdict": r.verdict,
                               "summary": r.summary[:300]} for r in rows],
            })  # fmt: skip
            if decision.warning:
                info["warning"] = decision.warning
            reason, to = decision.reason, S.READY
            update: dict[str, Any] = {"review_status": info}
            unmet: list[str] = []
            setup_only = False
            if decision.outcome == READY:  # ready means the Definition of Done held
                dod = await check_dod(self.c, current.model_copy(update={"review_status": info}))
                info["dod"] = dod.to_json()
                unmet = [i.line() for i in dod.unmet]
                setup_only = bool(unmet) and all(i.setup for i in dod.unmet)
            if decision.outcome != READY or unmet:
                to = S.REJECTED
                if decision.outcome == READY:  # another attempt cannot fix the setup
                    reason = DOD_SETUP if setup_only else "dod_unmet"
                update["failure_context"] = failure_context(
                    reason,
                    previous=current,
                    review_comments=comments_text(rows) or None,
                    dod_unmet=unmet or None,
                    head_sha=head,
                )
            try:
                await self.c.moves.move(current, to, reason=reason, update=update)
                return
            except StaleVersionError:
                continue
            except InvalidTransitionError:
                return


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def summary_line(status: dict[str, Any] | None) -> str:
    """`reviewing 2/3`'s figures, or the verdict, from a review_status (the faces)."""
    if not status:
        return ""
    if status.get("state") == "running":
        return f"{status.get('done', 0)}/{status.get('expected', 0)}"
    return str(status.get("verdict", ""))
