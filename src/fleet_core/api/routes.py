"""The routes under /api/fleet. Each one acts through the conductor as the verified caller, so
row-level security scopes every query to the caller's tasks: another tenant's task is 404."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from fleet_core.api.errors import responses
from fleet_core.api.identity import ADMIN_TIER, at_least
from fleet_core.auth.access import Access
from fleet_core.auth.tokens import Claims
from fleet_core.conductor import Actor, Conductor
from fleet_core.engine import Engine
from fleet_core.errors import AuthError, DeniedError
from fleet_core.events import FleetEvent
from fleet_core.lifecycle import TaskStatus, parse_statuses
from fleet_core.models import SpawnRequest, TaskDetail, TaskRecord, Tier
from fleet_core.registry import PREFIX_RE
from fleet_core.why import why

router = APIRouter(prefix="/api/fleet", responses=responses(401))
Observer = Annotated[Actor, Depends(at_least(Tier.OBSERVER))]
Builder = Annotated[Actor, Depends(at_least(Tier.BUILDER))]
SSE_KEEPALIVE_S = 15.0
EVENT_STREAM = "text/event-stream"
ACTS = responses(400, 403, 404, 409)  # a builder's verbs on one task
STARTS = responses(400, 403, 404, 409, 502)  # verbs that start an agent
TaskId = Annotated[
    str,
    Path(
        pattern=PREFIX_RE.pattern,
        description="A task id, or a unique prefix of it of 4 or more hex characters",
    ),
]
_ONE_STATUS = "|".join(s.value for s in TaskStatus)
STATUSES_RE = f"^({_ONE_STATUS})(,({_ONE_STATUS}))*$"


class Queued(BaseModel):
    queued: bool = True
    queue_id: int
    position: int
    operator: str


class Deleted(BaseModel):
    task: TaskRecord
    snapshot: str | None


class RetryBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str | None = Field(
        default=None,
        description="The operator's words, added to the retry prompt (1-2000 chars)",
        # Declared for clients (the server's own check, check_note, says which rule failed).
        json_schema_extra={"minLength": 1, "maxLength": 2000, "pattern": r"\S"},
    )


class Logs(BaseModel):
    id: str
    lines: list[str]


class Summary(BaseModel):
    active: int
    completed: int
    failed: int
    queued: int
    tasks: list[TaskRecord]


def engine_of(request: Request) -> Engine:
    engine: Engine = request.app.state.engine
    return engine


def conductor_of(request: Request) -> Conductor:
    return engine_of(request).conductor


@router.post(
    "/spawn",
    status_code=201,
    response_model=TaskRecord,
    responses={
        202: {"model": Queued},
        200: {"model": TaskRecord},
        **STARTS,
    },
)
async def spawn(
    request: Request,
    body: SpawnRequest,
    actor: Builder,
    queue: bool = False,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    """Start an agent (201), or wait in the queue when over the limit with `?queue=true`
    (202). A repeated `Idempotency-Key` returns the earlier task (200) or queue entry.
    `repository` is the name or path of a repository granted to the caller (GET
    /api/fleet/repos); any other is 404 `repository_not_found`."""
    if idempotency_key is not None:
        body = body.model_copy(update={"idempotency_key": idempotency_key})
    out = await conductor_of(request).spawn(actor, body, queue=queue)
    if out.queued is not None:
        doc = Queued(
            queue_id=out.queued.entry_id, position=out.queued.position, operator=actor.operator_id
        )
        return JSONResponse(doc.model_dump(mode="json"), status_code=202)
    assert out.task is not None
    code = 200 if out.existing else 201
    return JSONResponse(out.task.model_dump(mode="json"), status_code=code)


@router.get("/status", response_model=Summary, responses=responses(400, 403))
async def status(
    request: Request,
    actor: Observer,
    status: Annotated[
        str | None,
        Query(
            pattern=STATUSES_RE,
            description=f"Statuses, comma-separated, each one of: {', '.join(TaskStatus)}",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 50,
    all: bool = False,
) -> Any:
    """Counts over all the caller's tasks (every operator's with `all`, admins only) and the
    newest `limit` of them."""
    statuses = parse_statuses(status, "status")
    if all:
        if not actor.tier.at_least(ADMIN_TIER):
            raise DeniedError(
                f"all=true needs tier {ADMIN_TIER.value}; {actor.operator_id} is {actor.tier.value}"
            )
        actor = Actor(actor.operator_id, actor.tier, admin=True)
    summary = await conductor_of(request).status(actor, statuses=statuses, limit=limit)
    # Serialised once, straight from the model (the response_model documents the shape).
    return Response(summary.model_dump_json(), media_type="application/json")


@router.get("/tasks/{task_id}", response_model=TaskDetail, responses=responses(400, 404))
async def show(request: Request, task_id: TaskId, actor: Observer) -> Any:
    """The task, its one-line `why` first (diff, CI log and log tail stay in
    `failure_context`, each a field of its own)."""
    conductor = conductor_of(request)
    rec = await conductor.show(actor, task_id)
    doc = {"why": why(rec), **rec.model_dump(mode="json")}
    doc["forge_error"] = conductor.forge_error(rec)
    doc["dod"] = (rec.review_status or {}).get("dod")  # as checked when it became ready
    doc["report"] = (rec.review_status or {}).get("report")  # a review task's verdict JSON
    return JSONResponse(doc)


@router.post("/tasks/{task_id}/stop", response_model=TaskRecord, responses=ACTS)
async def stop(request: Request, task_id: TaskId, actor: Builder) -> Any:
    return (await conductor_of(request).stop(actor, task_id)).model_dump(mode="json")


@router.post("/tasks/{task_id}/retry", response_model=TaskRecord, responses=STARTS)
async def retry(
    request: Request, task_id: TaskId, actor: Builder, body: RetryBody | None = None
) -> Any:
    """Retry a failed or rejected task now; an optional body `{"note": "..."}` adds the
    operator's words to the retry prompt (sanitized like the rest of it)."""
    note = body.note if body is not None else None
    rec = await conductor_of(request).retry(actor, task_id, note=note)
    return rec.model_dump(mode="json")


@router.post(
    "/tasks/{task_id}/merge", response_model=TaskRecord, responses={**ACTS, **responses(503)}
)
async def merge(request: Request, task_id: TaskId, actor: Builder, force: bool = False) -> Any:
    """409 with the unmet items when the Definition of Done does not hold, unless `force`
    (audited)."""
    done = await conductor_of(request).merge(actor, task_id, force=force)
    return done.model_dump(mode="json")


@router.get("/tasks/{task_id}/logs", responses=responses(400, 404, 409))
async def logs(
    request: Request,
    task_id: TaskId,
    actor: Observer,
    lines: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Logs:
    text = await conductor_of(request).logs(actor, task_id, lines)
    return Logs(id=task_id, lines=text.splitlines())


@router.delete("/tasks/{task_id}", response_model=Deleted, responses=ACTS)
async def delete(request: Request, task_id: TaskId, actor: Builder) -> Any:
    gone = await conductor_of(request).delete(actor, task_id)
    snapshot = gone.cleanup.snapshot_dir if gone.cleanup else None
    return Deleted(task=gone.task, snapshot=str(snapshot) if snapshot else None).model_dump(
        mode="json"
    )


@router.get(
    "/events",
    response_class=StreamingResponse,
    responses={200: {"description": "Server-sent events", "content": {EVENT_STREAM: {}}}},
)
async def events(request: Request, actor: Observer) -> StreamingResponse:
    """Server-sent events of the engine's bus: the caller's own tasks (every operator's for
    an admin), one `data:` line of JSON per event. The first line is the comment `: connected`,
    sent once the stream is subscribed (events from then on are delivered). Before each event
    and keep-alive the token is checked again: a revoked or expired token ends the stream with
    an `error` event, and a downgraded admin sees only their own tasks from then on."""
    bus = engine_of(request).bus
    queue: asyncio.Queue[FleetEvent] = asyncio.Queue(maxsize=1000)
    claims: Claims = request.state.claims
    access: Access = request.app.state.access
    everyone = actor.tier.at_least(ADMIN_TIER)

    def deliver(event: FleetEvent) -> None:
        if (everyone or event.operator_id == actor.operator_id) and not queue.full():
            queue.put_nowait(event)

    off = bus.subscribe("*", deliver)

    async def still_admin() -> bool:
        """Whether the token still binds at the admin tier; AuthError if it no longer binds."""
        if claims.expires_at <= datetime.now(UTC):
            raise AuthError("token expired")
        return (await access.tier_of(claims)).at_least(ADMIN_TIER)

    async def stream() -> AsyncIterator[str]:
        try:
            yield ": connected\n\n"
            while True:
                try:
                    async with asyncio.timeout(SSE_KEEPALIVE_S):
                        event = await queue.get()
                except TimeoutError:
                    event = None
                try:
                    admin = await still_admin()
                except AuthError as exc:
                    yield f"event: error\ndata: {json.dumps(exc.to_dict())}\n\n"
                    return
                if event is None:
                    yield ": keep-alive\n\n"
                elif admin or event.operator_id == actor.operator_id:
                    yield f"event: {event.type.value}\ndata: {json.dumps(event.to_dict())}\n\n"
        finally:
            off()

    return StreamingResponse(stream(), media_type=EVENT_STREAM)
