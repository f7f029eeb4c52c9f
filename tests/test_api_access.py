"""Authorization that binds at once, over real HTTP (uvicorn on 127.0.0.1, the embedded
PostgreSQL): a revoked token and a downgraded tier are refused on every route of the app, on
the server that changed them at once and on every other server once its cache (at most
`auth_cache_seconds`, 60 s at most) has expired; tokens not on record are refused."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from conftest import Pg, api_server, api_settings, grant_repo, new_task
from fleet_core.auth.keys import KeyStore
from fleet_core.auth.tokens import AUDIENCE, ISSUER, issue_token
from fleet_core.config import Settings
from fleet_core.db.database import Tenant
from fleet_core.engine import Engine
from fleet_core.models import Tier
from fleet_core.registry import TaskRegistry
from test_api import FakeClock, spawn_body

B, O, S = Tier.BUILDER, Tier.OBSERVER, Tier.SOVEREIGN
# Every authenticated operation of the app and the lowest tier it needs (`?all=true` is its
# own line: it needs more than the route).
ROUTES: dict[tuple[str, str], Tier] = {
    ("POST", "/api/fleet/spawn"): B,
    ("GET", "/api/fleet/status"): O,
    ("GET", "/api/fleet/status?all=true"): S,
    ("GET", "/api/fleet/tasks/{task_id}"): O,
    ("POST", "/api/fleet/tasks/{task_id}/stop"): B,
    ("POST", "/api/fleet/tasks/{task_id}/retry"): B,
    ("POST", "/api/fleet/tasks/{task_id}/merge"): B,
    ("GET", "/api/fleet/tasks/{task_id}/logs"): O,
    ("GET", "/api/fleet/tasks/{task_id}/reviews"): O,
    ("GET", "/api/fleet/tasks/{task_id}/diff"): O,
    ("GET", "/api/reputation/query"): O,
    ("DELETE", "/api/fleet/tasks/{task_id}"): B,
    ("GET", "/api/fleet/events"): O,
    ("GET", "/api/fleet/secrets"): O,
    ("PUT", "/api/fleet/secrets/{name}"): B,
    ("DELETE", "/api/fleet/secrets/{name}"): B,
    ("GET", "/api/fleet/repos"): O,
    ("POST", "/api/fleet/repos"): S,
    ("POST", "/api/fleet/repos/{name}/grants"): S,
    ("DELETE", "/api/fleet/repos/{name}/grants/{operator}"): S,
    ("DELETE", "/api/fleet/repos/{name}"): S,
    ("GET", "/api/fleet/notifications"): O,
    ("POST", "/api/fleet/notifications/redrive"): B,
    ("POST", "/api/fleet/notifications/test"): B,
    ("GET", "/api/fleet/notifications/channels"): O,
    ("PUT", "/api/fleet/notifications/channels/discord"): B,
    ("PUT", "/api/fleet/notifications/channels/telegram"): B,
    ("PUT", "/api/fleet/notifications/channels/desktop"): B,
    ("DELETE", "/api/fleet/notifications/channels/discord"): B,
    ("DELETE", "/api/fleet/notifications/channels/telegram"): B,
    ("DELETE", "/api/fleet/notifications/channels/desktop"): B,
    ("GET", "/api/fleet/admin/tokens"): S,
    ("POST", "/api/fleet/admin/tokens/{jti}/revoke"): S,
    ("PUT", "/api/fleet/admin/operators/{operator}/tier"): S,
}
ALL_ROUTES = [pytest.param(k, id=f"{k[0]} {k[1]}") for k in ROUTES]
# A downgrade can refuse only what needs more than the lowest tier; reads need observer,
# which no stored tier is below (revocation refuses them).
ABOVE_OBSERVER = [pytest.param(k, id=f"{k[0]} {k[1]}") for k, t in ROUTES.items() if t != O]


@dataclass
class Server:
    client: httpx.AsyncClient
    engine: Engine
    keys: KeyStore
    settings: Settings
    clock: FakeClock

    async def token(self, operator: str, tier: Tier) -> str:
        return await issue_token(self.keys, operator, tier)

    async def headers(self, operator: str, tier: Tier) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(operator, tier)}"}


@asynccontextmanager
async def serving(pg: Pg, tmp_path: Path, host_id: str) -> AsyncIterator[Server]:
    settings = api_settings(pg, tmp_path, host_id)
    clock = FakeClock()
    async with api_server(settings, clock=clock) as (url, engine, keys):  # noqa: SIM117
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield Server(client, engine, keys, settings, clock)


@pytest.fixture
async def server(pg: Pg, su: Any, tmp_path: Path) -> AsyncIterator[Server]:
    async with serving(pg, tmp_path, "access-host") as s:
        yield s


@pytest.fixture
async def repo(repo: Path, server: Server) -> Path:
    """The sample repository, granted to the operators these tests spawn as."""
    await grant_repo(server.engine.db, repo, "alice", "root")
    return repo


def jti_of(token: str) -> str:
    return str(jwt.decode(token, options={"verify_signature": False})["jti"])


async def call(s: Server, route: tuple[str, str], headers: dict[str, str]) -> tuple[int, Any]:
    """The route called with plausible arguments (alice's task, an unknown jti, bob's tier);
    the status and the JSON body (None for an event stream that opened)."""
    method, template = route
    task = await TaskRegistry(s.engine.db, Tenant.operator("alice")).create(
        new_task(branch=f"fleet/access-{uuid.uuid4().hex[:8]}", repository="/nowhere")
    )
    name = "repo" if "/repos/" in template else "API_KEY"
    path = template.format(task_id=task.id, jti=uuid.uuid4(), operator="bob", name=name,
                           channel="desktop")  # fmt: skip
    body: dict[str, Any] | None = None
    if route == ("POST", "/api/fleet/spawn"):
        body = spawn_body(Path("/nowhere"))
    elif path.endswith("/tier"):
        body = {"tier": "builder"}
    elif route[0] == "PUT" and "/secrets/" in path:
        body = {"value": "v"}
    elif route == ("POST", "/api/fleet/repos"):
        body = {"path": "/nowhere"}
    elif route == ("POST", "/api/fleet/repos/{name}/grants"):
        body = {"operator": "bob"}
    elif route[0] == "PUT" and "/channels/" in path:
        body = {"enabled": False}
    elif route[0] == "POST" and "/notifications/" in path:
        body = {}
    async with s.client.stream(method, path, headers=headers, json=body) as r:
        if r.headers.get("content-type", "").startswith("text/event-stream"):
            return r.status_code, None
        await r.aread()
        return r.status_code, r.json()


async def test_every_authenticated_operation_is_listed(server: Server) -> None:
    spec = (await server.client.get("/openapi.json")).json()
    secured = {
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if op.get("security") and {} not in op["security"]  # /healthz: a token is optional
    }
    assert secured == {k for k in ROUTES if "?" not in k[1]}


@pytest.mark.parametrize("route", ALL_ROUTES)
async def test_revoked_token_is_refused_on_every_route(
    server: Server, route: tuple[str, str]
) -> None:
    tier = ROUTES[route]
    operator = "root" if tier is S else "alice"
    token = await server.token(operator, tier)
    h = {"Authorization": f"Bearer {token}"}
    before, doc = await call(server, route, h)
    assert before not in (401, 403), doc  # the token works until it is revoked
    boss = await server.headers("boss", S)
    r = await server.client.post(f"/api/fleet/admin/tokens/{jti_of(token)}/revoke", headers=boss)
    assert r.status_code == 200 and r.json()["state"] == "revoked"
    after, doc = await call(server, route, h)
    assert after == 401 and doc == {"error": "unauthorized", "message": "token revoked"}


@pytest.mark.parametrize("route", ABOVE_OBSERVER)
async def test_downgraded_tier_is_refused_on_every_route(
    server: Server, route: tuple[str, str]
) -> None:
    tier = ROUTES[route]
    operator = "root" if tier is S else "alice"
    h = await server.headers(operator, tier)
    before, doc = await call(server, route, h)
    assert before not in (401, 403), doc
    lower = list(Tier)[tier.rank - 1]
    boss = await server.headers("boss", S)
    r = await server.client.put(
        f"/api/fleet/admin/operators/{operator}/tier", json={"tier": lower.value}, headers=boss
    )
    assert r.status_code == 200 and r.json() == {"operator": operator, "tier": lower.value}
    after, doc = await call(server, route, h)
    assert after == 403 and doc["error"] == "denied", doc
    assert f"{operator} is {lower.value}" in doc["message"]
    # Removing the stored tier gives the token its own tier back.
    r = await server.client.put(
        f"/api/fleet/admin/operators/{operator}/tier", json={"tier": None}, headers=boss
    )
    assert r.status_code == 200
    again, doc = await call(server, route, h)
    assert again not in (401, 403), doc


async def test_tokens_not_on_record_are_refused(server: Server) -> None:
    kid, key = await server.keys.signer()
    now = int(time.time())
    claims = {"sub": "alice", "tier": "builder", "aud": AUDIENCE, "iss": ISSUER, "iat": now,
              "nbf": now, "exp": now + 600}  # fmt: skip
    recorded = await server.token("alice", B)
    cases = {
        "lacks the jti claim": claims,  # issued before jti existed
        "not on record": {**claims, "jti": str(uuid.uuid4())},  # issued before jti was recorded
        "does not match its record": {**claims, "sub": "mallory", "jti": jti_of(recorded)},
    }
    for reason, doc in cases.items():
        token = jwt.encode(doc, key, algorithm="ES256", headers={"kid": kid})
        r = await server.client.get(
            "/api/fleet/status", headers={"Authorization": f"Bearer {token}"}
        )
        assert r.status_code == 401 and reason in r.json()["message"], (reason, r.text)
    ok = await server.client.get(
        "/api/fleet/status", headers={"Authorization": f"Bearer {recorded}"}
    )
    assert ok.status_code == 200


async def test_admin_routes_list_revoke_and_store_tiers(server: Server) -> None:
    alice = await server.token("alice", B)
    boss = await server.headers("boss", S)
    r = await server.client.get("/api/fleet/admin/tokens", headers=boss)
    listed = {t["jti"]: t for t in r.json()}
    assert r.status_code == 200 and listed[jti_of(alice)]["state"] == "active"
    assert (
        listed[jti_of(alice)]["operator"] == "alice" and listed[jti_of(alice)]["tier"] == "builder"
    )
    r = await server.client.get("/api/fleet/admin/tokens?operator=alice", headers=boss)
    assert [t["jti"] for t in r.json()] == [jti_of(alice)]
    # Admin only; builders are refused, whatever they ask.
    ah = {"Authorization": f"Bearer {alice}"}
    for method, path in [("GET", "/api/fleet/admin/tokens"),
                         ("POST", f"/api/fleet/admin/tokens/{jti_of(alice)}/revoke")]:  # fmt: skip
        r = await server.client.request(method, path, headers=ah)
        assert r.status_code == 403, r.text
    r = await server.client.put(
        "/api/fleet/admin/operators/alice/tier", json={"tier": "sovereign"}, headers=ah
    )
    assert r.status_code == 403
    # Unknown and malformed ids, bad tiers: 404 and 400 naming the field; nothing changes.
    r = await server.client.post(f"/api/fleet/admin/tokens/{uuid.uuid4()}/revoke", headers=boss)
    assert r.status_code == 404 and r.json()["error"] == "not_found"
    r = await server.client.post("/api/fleet/admin/tokens/not-a-jti/revoke", headers=boss)
    assert r.status_code == 400 and r.json()["field"] == "jti"
    r = await server.client.put(
        "/api/fleet/admin/operators/alice/tier", json={"tier": "emperor"}, headers=boss
    )
    assert r.status_code == 400 and r.json()["field"] == "tier"
    assert (await server.client.get("/api/fleet/status", headers=ah)).status_code == 200
    # Revoking twice keeps the first time.
    first = await server.client.post(
        f"/api/fleet/admin/tokens/{jti_of(alice)}/revoke", headers=boss
    )
    second = await server.client.post(
        f"/api/fleet/admin/tokens/{jti_of(alice)}/revoke", headers=boss
    )
    assert first.status_code == second.status_code == 200
    assert first.json()["revoked_at"] == second.json()["revoked_at"]


async def test_revocation_and_downgrade_reach_another_server_within_its_cache_time(
    pg: Pg, su: Any, tmp_path: Path
) -> None:
    async with serving(pg, tmp_path, "host-a") as a, serving(pg, tmp_path, "host-b") as b:
        assert a.settings.auth_cache_seconds == b.settings.auth_cache_seconds == 30
        token = await a.token("alice", B)
        h = {"Authorization": f"Bearer {token}"}
        stop = f"/api/fleet/tasks/{uuid.uuid4()}/stop"  # 404 while the token binds
        assert (await a.client.get("/api/fleet/status", headers=h)).status_code == 200
        assert (await b.client.get("/api/fleet/status", headers=h)).status_code == 200
        assert (await b.client.post(stop, headers=h)).status_code == 404
        boss = await a.headers("boss", S)
        # A downgrade made on A: A refuses builder verbs at once; B within its cache time.
        r = await a.client.put(
            "/api/fleet/admin/operators/alice/tier", json={"tier": "observer"}, headers=boss
        )
        assert r.status_code == 200
        assert (await a.client.post(stop, headers=h)).status_code == 403
        b.clock.advance(b.settings.auth_cache_seconds)
        assert (await b.client.post(stop, headers=h)).status_code == 403
        assert (await b.client.get("/api/fleet/status", headers=h)).status_code == 200
        # A revocation made on A: the same.
        r = await a.client.post(f"/api/fleet/admin/tokens/{jti_of(token)}/revoke", headers=boss)
        assert r.status_code == 200
        assert (await a.client.get("/api/fleet/status", headers=h)).status_code == 401
        b.clock.advance(b.settings.auth_cache_seconds)
        r = await b.client.get("/api/fleet/status", headers=h)
        assert r.status_code == 401 and r.json()["message"] == "token revoked"


async def read_stream(
    s: Server, headers: dict[str, str], ready: asyncio.Event, until: str
) -> list[str]:
    """The stream's lines, up to the first that contains `until` (or its end)."""
    lines: list[str] = []
    async with s.client.stream("GET", "/api/fleet/events", headers=headers) as r:
        assert r.status_code == 200
        async for line in r.aiter_lines():
            lines.append(line)
            if line == ": connected":
                ready.set()
            if until in line:
                break
    return lines


async def test_open_event_stream_ends_when_its_token_is_revoked(server: Server, repo: Path) -> None:
    token = await server.token("alice", B)
    ready = asyncio.Event()
    h = {"Authorization": f"Bearer {token}"}
    listener = asyncio.create_task(read_stream(server, h, ready, until="data: "))
    await asyncio.wait_for(ready.wait(), 10)
    boss = await server.headers("boss", S)
    r = await server.client.post(f"/api/fleet/admin/tokens/{jti_of(token)}/revoke", headers=boss)
    assert r.status_code == 200
    # An event of alice's (from another token of hers) wakes the stream: it ends instead.
    other = await server.headers("alice", B)
    r = await server.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=other)
    assert r.status_code == 201, r.text
    lines = await asyncio.wait_for(listener, 10)
    assert lines[-2:] == [
        "event: error",
        'data: {"error": "unauthorized", "message": "token revoked"}',
    ]
    assert not any(line.startswith("event: spawned") for line in lines)


async def test_downgraded_admin_stream_stops_carrying_others_events(
    server: Server, repo: Path
) -> None:
    root = await server.headers("root", S)
    ready = asyncio.Event()
    listener = asyncio.create_task(read_stream(server, root, ready, until='"type": "spawned"'))
    await asyncio.wait_for(ready.wait(), 10)
    boss = await server.headers("boss", S)
    r = await server.client.put(
        "/api/fleet/admin/operators/root/tier", json={"tier": "builder"}, headers=boss
    )
    assert r.status_code == 200
    alice = await server.headers("alice", B)
    assert (await server.client.post("/api/fleet/spawn", json=spawn_body(repo),
                                     headers=alice)).status_code == 201  # fmt: skip
    # root's own spawn (allowed to a builder) comes after alice's events on the bus.
    mine = await server.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=root)
    assert mine.status_code == 201, mine.text
    lines = await asyncio.wait_for(listener, 10)
    events = [json.loads(x.removeprefix("data: ")) for x in lines if x.startswith("data: ")]
    assert events[-1]["type"] == "spawned" and events[-1]["task_id"] == mine.json()["id"]
    assert {e["operator_id"] for e in events} == {"root"}
