"""Engine errors as HTTP answers: the same JSON documents the CLI prints with --json."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

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
    OtherHostError,
    RetryBudgetSpentError,
    StaleVersionError,
    TaskNotFoundError,
)

STATUS: list[tuple[type[FleetError], int]] = [
    (AuthError, 401),
    (BadInputError, 400),
    (AmbiguousTaskIdError, 400),
    (DeniedError, 403),  # SpawnDeniedError and tier checks
    (TaskNotFoundError, 404),
    (NoSessionError, 404),
    (InvalidTransitionError, 409),
    (StaleVersionError, 409),
    (ActiveTaskDeletionError, 409),
    (DuplicateTaskError, 409),
    (MergeRefusedError, 409),
    (RetryBudgetSpentError, 409),
    (OtherHostError, 409),
]


def status_of(exc: FleetError) -> int:
    for kind, code in STATUS:
        if isinstance(exc, kind):
            return code
    return 500


def install(app: FastAPI) -> None:
    @app.exception_handler(FleetError)
    async def fleet_error(request: Request, exc: FleetError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, AuthError) else None
        return JSONResponse(exc.to_dict(), status_code=status_of(exc), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or "request"
        doc = {"error": "bad_input", "field": field, "message": str(first.get("msg"))}
        return JSONResponse(doc, status_code=400)
