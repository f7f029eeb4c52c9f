"""Prometheus metrics of the headless server, in a registry of its own: tasks by status,
spawn/denial/retry/failure counters from the bus, admission latency, monitor cycles, forge
calls and budget, agents alive, and requests by route and code. Its middleware also gives
each request an id (the client's X-Request-Id, else a new one), returned in the response and
carried by every log record written while the request runs."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from fastapi import Request, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from fleet_core.db.database import Tenant
from fleet_core.engine import Engine
from fleet_core.events import EventType, FleetEvent
from fleet_core.lifecycle import TaskStatus
from fleet_core.logs import request_id
from fleet_core.registry import TaskRegistry

log = logging.getLogger(__name__)
REFRESH_S = 5.0
COUNTED = {
    EventType.SPAWNED: "spawns",
    EventType.SPAWN_DENIED: "denials",
    EventType.RETRYING: "retries",
    EventType.FAILED: "failures",
    EventType.QUEUED: "queued",
}


class Metrics:
    def __init__(
        self,
        engine: Engine,
        *,
        refresh_s: float = REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine = engine
        self.refresh_s = refresh_s
        self.clock = clock
        self.refreshes = 0  # how many times the gauges were read from the database and tmux
        self._refreshed_at: float | None = None
        self._refresh_lock = asyncio.Lock()
        self.registry = r = CollectorRegistry()
        self.tasks = Gauge("fleet_tasks", "Tasks by status", ["status"], registry=r)
        self.events = Counter("fleet_events", "Engine events", ["kind"], registry=r)
        self.admission = Histogram(
            "fleet_admission_seconds", "Spawn requests, admission to answer", registry=r
        )
        self.cycles = Gauge("fleet_monitor_cycles", "Monitor cycles run", registry=r)
        self.cycle_seconds = Histogram(
            "fleet_monitor_cycle_seconds", "Monitor cycle duration", registry=r,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        self.cycle_errors = Gauge("fleet_monitor_errors", "Monitor errors", registry=r)
        self.forge_calls = Gauge("fleet_forge_calls", "Forge calls made", ["forge"], registry=r)
        self.forge_left = Gauge("fleet_forge_budget_remaining", "API calls left", ["forge"],
                                registry=r)  # fmt: skip
        self.alive = Gauge("fleet_agents_alive", "Agents running on this host", registry=r)
        self.requests = Counter(
            "fleet_http_requests", "HTTP requests", ["route", "code"], registry=r
        )
        engine.bus.subscribe("*", self.on_event)
        engine.monitor.on_cycle.append(lambda report: self.cycle_seconds.observe(report.ms / 1000))

    def on_event(self, event: FleetEvent) -> None:
        kind = COUNTED.get(event.type)
        if kind:
            self.events.labels(kind).inc()

    async def middleware(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        begin = time.perf_counter()
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        token = request_id.set(rid[:64])
        try:
            response = await call_next(request)
        finally:
            request_id.reset(token)
        response.headers["X-Request-Id"] = rid[:64]
        route = request.scope.get("route")
        path = getattr(route, "path", "unmatched")
        self.requests.labels(path, str(response.status_code)).inc()
        if path == "/api/fleet/spawn":
            self.admission.observe(time.perf_counter() - begin)
        return response

    async def render(self) -> tuple[bytes, str]:
        """The text format. The gauges read from the database (counts over every operator) and
        tmux are refreshed at most once per `refresh_s`, however often it is scraped; a failed
        refresh is logged and the previous figures are served."""
        async with self._refresh_lock:
            now = self.clock()
            if self._refreshed_at is None or now - self._refreshed_at >= self.refresh_s:
                self._refreshed_at = now
                self.refreshes += 1
                try:
                    await self._refresh()
                except Exception:
                    log.exception("metrics refresh failed")
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    async def _refresh(self) -> None:
        counts = await TaskRegistry(self.engine.db, Tenant.admin()).count_by_status()
        for status in TaskStatus:
            self.tasks.labels(status.value).set(counts.get(status, 0))
        health = self.engine.monitor.health()
        self.cycles.set(health.get("cycles", 0))
        self.cycle_errors.set(health.get("errors", 0))
        for name, forge in self.engine.conductor.forges.health().items():
            self.forge_calls.labels(name).set(forge.get("calls", 0))
            if forge.get("remaining") is not None:
                self.forge_left.labels(name).set(forge["remaining"])
        self.alive.set(len(await self.engine.conductor.runtime.alive_tasks()))
