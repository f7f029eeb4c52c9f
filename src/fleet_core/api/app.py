"""The FastAPI application of the headless server: the /api/fleet routes, the JWKS document,
health and metrics, over one running engine and its key store."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel

from fleet_core import __version__
from fleet_core.api import (
    admin_routes,
    errors,
    notify_routes,
    repo_routes,
    routes,
    secret_routes,
)
from fleet_core.api.body import JsonBodies
from fleet_core.api.identity import ADMIN_TIER, OPTIONAL_BEARER, optional_caller
from fleet_core.api.metrics import Metrics
from fleet_core.auth.access import Access
from fleet_core.auth.keys import KeyStore
from fleet_core.conductor import Actor
from fleet_core.engine import Engine
from fleet_core.notify.status import delivery_health

JWKS_MAX_AGE_S = 300
ADMIN_ONLY_HEALTH = ("last_error", "forges")


def create_app(
    engine: Engine, keys: KeyStore, *, clock: Callable[[], float] = time.monotonic
) -> FastAPI:
    """The app over a running engine. `clock` times its caches: what it read about tokens
    (`auth_cache_seconds`) and the metrics' figures (5 s)."""
    app = FastAPI(
        title="fleet",
        version=__version__,
        description="Operator API of a fleet of AI coding agents. Authenticate with an ES256 "
        "JWT (`fleet token issue`) as `Authorization: Bearer <token>`.",
    )
    app.state.engine = engine
    app.state.keys = keys
    app.state.access = Access(engine.db, cache_s=engine.settings.auth_cache_seconds, clock=clock)
    app.state.metrics = Metrics(engine, clock=clock)
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(secret_routes.router)
    app.include_router(notify_routes.router)
    app.include_router(admin_routes.router)
    app.include_router(repo_routes.router)
    app.middleware("http")(app.state.metrics.middleware)
    app.add_middleware(JsonBodies)

    @app.get("/.well-known/jwks.json", tags=["auth"])
    async def jwks() -> Response:
        """Every public key valid for verifying this server's tokens."""
        doc = await keys.jwks()
        headers = {"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"}
        return JSONResponse(doc, headers=headers)

    @app.get(
        "/healthz",
        tags=["ops"],
        response_model=Health,
        response_model_exclude_none=True,
        responses=errors.responses(401),
        openapi_extra=OPTIONAL_BEARER,
    )
    async def healthz(actor: Annotated[Actor | None, Depends(optional_caller)]) -> Health:
        """`ok` and `status` (ok or degraded) for anyone; with a valid token also the database
        and the monitor's counts; its last error and the forges' state (which may name any
        operator's repository or task) for admins only."""
        try:
            async with engine.db.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            database = "ok"
        except Exception as exc:  # the answer says what is wrong; it does not fail
            database = f"error: {type(exc).__name__}"
        monitor = engine.monitor.health()
        notify = engine.notify.health() if engine.notify is not None else None
        # A client of another process's engine (DESIGN §10) runs no monitor of its own.
        client = engine.serving.startswith("client")
        ok = database == "ok" and (bool(monitor.get("running")) or client)
        ok = ok and (notify is None or notify.get("nats") != "error")  # NATS down: degraded
        health = Health(ok=ok, status="ok" if ok else "degraded")
        if actor is None:
            return health
        if not actor.tier.at_least(ADMIN_TIER):
            monitor = {k: v for k, v in monitor.items() if k not in ADMIN_ONLY_HEALTH}
        if notify is not None and database == "ok":
            d = await delivery_health(engine.db, actor.tenant)
            notify |= {"pending": d.pending, "failing": d.failing, "dead_lettered": d.dead}
        found = {"database": database, "monitor": monitor, "notifications": notify}
        return health.model_copy(update={**found, "engine": engine.serving or None})

    @app.get(
        "/metrics",
        tags=["ops"],
        response_class=PlainTextResponse,
        responses={200: {"description": "Prometheus text format", "content": {"text/plain": {}}}},
    )
    async def metrics(request: Request) -> Response:
        """Prometheus metrics; the figures read from the database and tmux are refreshed at
        most once per 5 seconds, whatever the scrape rate."""
        body, content_type = await request.app.state.metrics.render()
        return Response(body, media_type=content_type)

    return app


class Health(BaseModel):
    ok: bool
    status: Literal["ok", "degraded"]
    database: str | None = None  # with a token
    monitor: dict[str, Any] | None = None  # with a token
    notifications: dict[str, Any] | None = None  # with a token, on an engine that delivers
    engine: str | None = None  # with a token: "engine", or whose client this server is
