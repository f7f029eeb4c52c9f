"""Engine errors as HTTP answers: the same JSON documents the CLI prints with --json, and
declared as such in the OpenAPI document (`ErrorBody`, `responses`)."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from fleet_core.auth.secret_store import SecretNotFoundError
from fleet_core.errors import (
    ActiveTaskDeletionError,
    AmbiguousTaskIdError,
    AuthError,
    BadInputError,
    DeniedError,
    DuplicateTaskError,
    FleetError,
    InvalidTransitionError,
    MergeRefusedError,
    NoSessionError,
    NotFoundError,
    OtherHostError,
    RepositoryConflictError,
    RepositoryNotFoundError,
    RepositoryUnavailableError,
    RetryBudgetSpentError,
    SpawnError,
    StaleVersionError,
    TaskNotFoundError,
)
from fleet_core.forge.base import ForgeError, ForgePausedError
from fleet_core.saga import SagaError

STATUS: list[tuple[type[FleetError], int]] = [
    (AuthError, 401),
    (RepositoryUnavailableError, 404),  # before BadInputError, its base
    (BadInputError, 400),
    (AmbiguousTaskIdError, 400),
    (DeniedError, 403),  # SpawnDeniedError and tier checks
    (TaskNotFoundError, 404),
    (NoSessionError, 404),
    (SecretNotFoundError, 404),
    (NotFoundError, 404),
    (RepositoryNotFoundError, 404),
    (RepositoryConflictError, 409),
    (InvalidTransitionError, 409),
    (StaleVersionError, 409),
    (ActiveTaskDeletionError, 409),
    (DuplicateTaskError, 409),
    (MergeRefusedError, 409),
    (RetryBudgetSpentError, 409),
    (OtherHostError, 409),
    # The agent could not be started (the repository's setup failed, tmux or the sandbox
    # refused): the task exists and is failed; not a fault of the server's own.
    (SpawnError, 502),
    (ForgePausedError, 503),  # rate-limited by the forge: Retry-After says when to come back
    (ForgeError, 409),  # no forge for the task's repository (no origin, gh missing)
]


DESCRIPTIONS = {
    400: "Bad input: `field` names what was refused",
    401: "No valid bearer token",
    403: "Denied: the caller's tier is too low, or a spawn is over the limit",
    404: "No such task or secret (or not the caller's), token, or repository granted to the caller",
    409: "The task's state does not allow this now (or a repository's name or path is taken)",
    502: "The agent could not be started (e.g. the repository's setup failed): the task is "
    "failed, `task_id` names it, `message` says why",
    503: "The forge is rate-limited: try again after Retry-After seconds",
}


class ErrorBody(BaseModel):
    """Every refusal: a code and a message. Bad input names its `field`; some errors say
    more (a spawn denial: operator, tier, active, limit, reason, hint, queued_ahead)."""

    model_config = ConfigDict(extra="allow")

    error: str
    message: str
    field: str | None = None


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` of a route decorator for the errors it may answer with."""
    return {code: {"model": ErrorBody, "description": DESCRIPTIONS[code]} for code in codes}


# Codes of the errors that FastAPI and Starlette raise themselves (a body that is not JSON, an
# unknown path or method), so that they answer in the same shape as the engine's.
HTTP_CODES = {
    400: "bad_input",
    401: "unauthorized",
    403: "denied",
    404: "not_found",
    405: "method_not_allowed",
    413: "too_large",
    415: "unsupported_media_type",
}


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def status_of(exc: FleetError) -> int:
    if isinstance(exc, SagaError) and isinstance(exc.cause, FleetError):
        if isinstance(exc.cause, BadInputError):
            # The request was accepted; the task's repository or base no longer allows the
            # step (a retry whose repository is gone): a conflict with the task's state.
            return 409
        return status_of(exc.cause)  # a spawn step that failed answers as its cause would
    for kind, code in STATUS:
        if isinstance(exc, kind):
            return code
    return 500


def allowed_methods(request: Request) -> list[str]:
    """The methods the OpenAPI document declares for this request's path (every route of the
    path, not only the one matched first)."""
    table: list[tuple[re.Pattern[str], list[str]]] | None = getattr(
        request.app.state, "allowed_methods", None
    )
    if table is None:
        table = []
        for template, item in request.app.openapi().get("paths", {}).items():
            pattern = re.sub(r"\\\{[^}]*\\\}", "[^/]+", re.escape(template))
            table.append((re.compile(f"^{pattern}$"), sorted(m.upper() for m in item)))
        request.app.state.allowed_methods = table
    path = request.url.path
    return sorted({m for regex, methods in table if regex.match(path) for m in methods})


def install(app: FastAPI) -> None:
    @app.exception_handler(FleetError)
    async def fleet_error(request: Request, exc: FleetError) -> JSONResponse:
        headers = None
        if isinstance(exc, AuthError):
            headers = {"WWW-Authenticate": "Bearer"}
        elif isinstance(exc, ForgePausedError):
            until = exc.until if exc.until.tzinfo else exc.until.replace(tzinfo=UTC)
            wait = (until - datetime.now(UTC)).total_seconds()
            headers = {"Retry-After": str(max(1, math.ceil(wait)))}
        doc = exc.public_dict() if isinstance(exc, RepositoryUnavailableError) else exc.to_dict()
        return JSONResponse(doc, status_code=status_of(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "request"
        doc = {"error": "bad_input", "field": field, "message": str(first.get("msg"))}
        sent = request.headers.get("content-type", "")
        if tuple(first.get("loc", ())) == ("body",) and not is_json(sent):
            # The body was not read as JSON because of its declared type (see api/body.py).
            doc["field"] = "Content-Type"
            doc["message"] = (
                f"send the body as JSON with Content-Type: application/json, not {sent}"
            )
        return JSONResponse(doc, status_code=400)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        code = exc.status_code
        doc: dict[str, Any] = {"error": HTTP_CODES.get(code, f"http_{code}"), "message": exc.detail}
        headers = dict(exc.headers or {})
        if code == 400:
            doc["field"] = "body"  # FastAPI's only 400: a body it could not parse
        if code == 405:  # every method of the path, not only those of the route matched first
            headers["Allow"] = ", ".join(allowed_methods(request))
        return JSONResponse(doc, status_code=code, headers=headers or None)

    build = app.openapi

    def openapi() -> dict[str, Any]:
        """FastAPI's document without its 422 answers: invalid requests get a 400 here."""
        if app.openapi_schema is None:
            doc = build()
            for item in doc.get("paths", {}).values():
                for operation in item.values():
                    operation.get("responses", {}).pop("422", None)
            schemas = doc.get("components", {}).get("schemas", {})
            for name in ("HTTPValidationError", "ValidationError"):
                schemas.pop(name, None)
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
