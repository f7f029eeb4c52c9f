"""The `fleet_reviews` rows: one verdict per reviewer and head commit of a task's PR."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from fleet_core.db.database import Database, Tenant

COLUMNS = ("attempt, head_sha, reviewer, kind, model, verdict, summary, comments, error, "
           "duration_ms, cost_usd, created_at")  # fmt: skip


@dataclass(frozen=True)
class ReviewRow:
    reviewer: str  # the focus: security, logic, architecture, ...
    kind: str
    model: str
    verdict: str  # approve, request_changes, comment
    summary: str = ""
    comments: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None  # why it counts as `comment`: crashed, timed out, invalid answer
    duration_ms: int | None = None
    cost_usd: float | None = None
    attempt: int = 1
    head_sha: str = ""
    created_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        return out


class ReviewStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(
        self, task_id: UUID, operator_id: str, row: ReviewRow, *, tenant: Tenant | None = None
    ) -> bool:
        """Stored; False when this reviewer's verdict on this head was stored already."""
        async with self.db.tx(tenant or Tenant.operator(operator_id)) as conn:
            status = await conn.execute(
                "INSERT INTO fleet_reviews (task_id, operator_id, attempt, head_sha, reviewer, "
                "kind, model, verdict, summary, comments, error, duration_ms, cost_usd) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) "
                "ON CONFLICT (task_id, head_sha, reviewer) DO NOTHING",
                task_id, operator_id, row.attempt, row.head_sha, row.reviewer, row.kind,
                row.model, row.verdict, row.summary[:20000], row.comments, row.error,
                row.duration_ms, row.cost_usd,
            )  # fmt: skip
        return bool(status.endswith(" 1"))

    async def for_task(
        self, tenant: Tenant, task_id: UUID, *, head_sha: str | None = None
    ) -> list[ReviewRow]:
        """Every verdict on the task (oldest attempt first), or only those on one head."""
        sql = f"SELECT {COLUMNS} FROM fleet_reviews WHERE task_id = $1"
        args: list[Any] = [task_id]
        if head_sha is not None:
            sql += " AND head_sha = $2"
            args.append(head_sha)
        async with self.db.tx(tenant) as conn:
            rows = await conn.fetch(sql + " ORDER BY attempt, created_at, reviewer", *args)
        return [_row(r) for r in rows]


def _row(r: Any) -> ReviewRow:
    cost = r["cost_usd"]
    return ReviewRow(
        reviewer=r["reviewer"], kind=r["kind"], model=r["model"], verdict=r["verdict"],
        summary=r["summary"], comments=list(r["comments"] or []), error=r["error"],
        duration_ms=r["duration_ms"], cost_usd=float(cost) if cost is not None else None,
        attempt=r["attempt"], head_sha=r["head_sha"], created_at=r["created_at"],
    )  # fmt: skip
