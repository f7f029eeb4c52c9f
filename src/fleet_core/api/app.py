"""The FastAPI application of the headless server: the /api/fleet routes, the JWKS document,
health and metrics, over one running engine and its key store."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from fleet_core import __version__
from fleet_core.api import errors, repo_routes, routes
from fleet_core.api.metrics import Metrics
from fleet_core.auth.keys import KeyStore
from fleet_core.engine import Engine

JWKS_MAX_AGE_S = 300


def create_app(engine: Engine, keys: KeyStore) -> FastAPI:
    app = FastAPI(
        title="fleet",
        version=__version__,
        description="Operator API of a fleet of AI coding agents. Authenticate with an ES256 "
        "JWT (`fleet token issue`) as `Authorization: Bearer <token>`.",
    )
    app.state.engine = engine
    app.state.keys = keys
    app.state.metrics = Metrics(engine)
    errors.install(app)
    app.include_router(routes.router)
    app.include_router(repo_routes.router)
    app.middleware("http")(app.state.metrics.middleware)

    @app.get("/.well-known/jwks.json", tags=["auth"])
    async def jwks() -> Response:
        """Every public key valid for verifying this server's tokens."""
        doc = await keys.jwks()
        headers = {"Cache-Control": f"public, max-age={JWKS_MAX_AGE_S}"}
        return JSONResponse(doc, headers=headers)

    @app.get("/healthz", tags=["ops"])
    async def healthz() -> dict[str, Any]:
        """Database reachable, monitor running, forges' health and budget."""
        try:
            async with engine.db.pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
            database = "ok"
        except Exception as exc:  # the answer says what is wrong; it does not fail
            database = f"error: {type(exc).__name__}"
        monitor = engine.monitor.health()
        ok = database == "ok" and bool(monitor.get("running"))
        return {"ok": ok, "database": database, "monitor": monitor}

    @app.get("/metrics", tags=["ops"])
    async def metrics(request: Request) -> Response:
        body, content_type = await request.app.state.metrics.render()
        return Response(body, media_type=content_type)

    return app
