"""The reviews of a task and its PR's diff: GET /api/fleet/tasks/{id}/reviews and /diff."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel

from fleet_core.api.errors import responses
from fleet_core.api.identity import at_least
from fleet_core.api.routes import TaskId, conductor_of
from fleet_core.conductor import Actor
from fleet_core.models import Tier
from fleet_core.review.reputation import reputation_of
from fleet_core.review.view import task_diff, task_reviews

router = APIRouter(prefix="/api/fleet", tags=["reviews"], responses=responses(401))
Observer = Annotated[Actor, Depends(at_least(Tier.OBSERVER))]


class LineComment(BaseModel):
    path: str
    line: int
    body: str


class Review(BaseModel):
    attempt: int
    head_sha: str
    reviewer: str
    kind: str
    model: str
    verdict: str
    summary: str
    comments: list[LineComment]
    error: str | None
    duration_ms: int | None
    cost_usd: float | None
    created_at: str | None


class Reviews(BaseModel):
    id: str
    status: str
    review_status: dict[str, Any] | None
    reviews: list[Review]


class Diff(BaseModel):
    id: str
    pr_number: int
    diff: str


@router.get("/tasks/{task_id}/reviews", response_model=Reviews, responses=responses(400, 404))
async def reviews(request: Request, task_id: TaskId, actor: Observer) -> Any:
    """Every reviewer's verdict on the task (each attempt's head), and the summary."""
    rec, rows = await task_reviews(conductor_of(request), actor, task_id)
    return {"id": str(rec.id), "status": rec.status.value, "review_status": rec.review_status,
            "reviews": [r.to_json() for r in rows]}  # fmt: skip


@router.get("/tasks/{task_id}/diff", response_model=Diff, responses=responses(400, 404, 409, 503))
async def diff(request: Request, task_id: TaskId, actor: Observer) -> Any:
    """The task's PR diff against its base (409 while it has no PR)."""
    rec, text = await task_diff(conductor_of(request), actor, task_id)
    return {"id": str(rec.id), "pr_number": rec.pr_number, "diff": text}


reputation_router = APIRouter(prefix="/api/reputation", tags=["reputation"],
                              responses=responses(401))  # fmt: skip


class ReputationAnswer(BaseModel):
    score: float
    confidence: float | None
    n: int


@reputation_router.get("/query", response_model=ReputationAnswer, responses=responses(400))
async def reputation_query(
    request: Request,
    actor: Observer,
    routing_key: Annotated[str, Query(alias="routingKey", min_length=5, max_length=200)],
) -> Any:
    """How well `<agent>:<model>:<task_type>` does on finished tasks (fleet-wide): the Beta
    posterior's mean (`score`), how far it narrowed from the prior (`confidence`, null for a
    key with no finished task) and the tasks counted (`n`)."""
    del actor  # any operator may read it (figures per model, no task)
    rep = await reputation_of(conductor_of(request).db, routing_key)
    return rep.answer()
