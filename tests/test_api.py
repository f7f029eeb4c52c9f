"""The HTTP API over real HTTP: uvicorn on 127.0.0.1, httpx, the embedded PostgreSQL, git,
tmux and the demo agent; tokens made by the key store (ES256)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from conftest import Pg, api_server, api_settings, demo_log, eventually, git, grant_repo, normalised
from fleet_core.auth.keys import KeyStore
from fleet_core.auth.tokens import AUDIENCE, ISSUER, issue_token
from fleet_core.config import Settings
from fleet_core.db.database import Tenant
from fleet_core.engine import Engine
from fleet_core.models import Tier


class FakeClock:
    """A monotonic clock that moves only when told (the app's caches read it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Api:
    client: httpx.AsyncClient
    keys: KeyStore
    settings: Settings
    engine: Engine

    async def token(self, operator: str = "alice", tier: Tier = Tier.BUILDER, **kw: Any) -> str:
        return await issue_token(self.keys, operator, tier, **kw)

    async def as_(self, operator: str = "alice", tier: Tier = Tier.BUILDER) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token(operator, tier)}"}


@pytest.fixture
async def api(pg: Pg, su: Any, tmp_path: Path) -> AsyncIterator[Api]:
    settings = api_settings(pg, tmp_path, "api-host")
    async with api_server(settings) as (url, engine, keys):  # noqa: SIM117 (needs url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield Api(client, keys, settings, engine)


@pytest.fixture
async def repo(repo: Path, api: Api) -> Path:
    """The sample repository, granted to alice (only)."""
    await grant_repo(api.engine.db, repo, "alice")
    return repo


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge_hs256(claims: dict[str, Any], kid: str, secret: bytes) -> str:
    """An HS256 token made by hand (PyJWT refuses key material that looks like a JWK)."""
    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = b64(json.dumps(claims).encode())
    mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(mac)}"


async def _equal(got: Awaitable[object], want: object) -> bool:
    return await got == want


def spawn_body(repo: Path, description: str = "write docs [demo:hang]", **kw: Any) -> dict:
    return {"description": description, "repository": str(repo), "task_type": "docs",
            "agent_type": "demo", **kw}  # fmt: skip


async def test_spawn_status_show_logs_stop_delete(api: Api, repo: Path) -> None:
    h = await api.as_()
    r = await api.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=h)
    assert r.status_code == 201, r.text
    task = r.json()
    assert task["status"] == "running" and task["operator_id"] == "alice"
    r = await api.client.get("/api/fleet/status", headers=h)
    assert r.status_code == 200 and r.json()["active"] == 1
    assert [t["id"] for t in r.json()["tasks"]] == [task["id"]]
    r = await api.client.get(f"/api/fleet/tasks/{task['id'][:8]}", headers=h)
    assert r.status_code == 200 and r.json()["branch"] == task["branch"]
    hang = demo_log(task, "waiting forever")

    async def logs() -> list[str]:
        r = await api.client.get(f"/api/fleet/tasks/{task['id']}/logs?lines=20", headers=h)
        assert r.status_code == 200, r.text
        return normalised(r.json()["lines"])

    await eventually(lambda: _equal(logs(), hang))  # the agent prints as it goes
    assert await logs() == hang
    assert (await api.client.get(f"/api/fleet/tasks/{task['id']}/logs?lines=2000",
                                 headers=h)).status_code == 400  # fmt: skip
    r = await api.client.delete(f"/api/fleet/tasks/{task['id']}", headers=h)
    assert r.status_code == 409 and r.json()["error"] == "conflict"
    r = await api.client.post(f"/api/fleet/tasks/{task['id']}/stop", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    r = await api.client.post(f"/api/fleet/tasks/{task['id']}/stop", headers=h)
    assert r.status_code == 200 and r.json()["status"] == "cancelled"  # idempotent
    r = await api.client.delete(f"/api/fleet/tasks/{task['id']}", headers=h)
    assert r.status_code == 200 and r.json()["task"]["id"] == task["id"]
    r = await api.client.get(f"/api/fleet/tasks/{task['id']}", headers=h)
    assert r.status_code == 404


async def test_spawn_errors_denial_queue_and_idempotency(api: Api, repo: Path) -> None:
    h = await api.as_(tier=Tier.BUILDER)  # limit 1
    r = await api.client.post(
        "/api/fleet/spawn", json=spawn_body(repo, base_branch="-x"), headers=h
    )
    assert r.status_code == 400 and r.json()["field"] == "base_branch"
    for model in ("--dangerously-skip-permissions", "gpt 5", "x" * 101):
        r = await api.client.post("/api/fleet/spawn", json=spawn_body(repo, model=model), headers=h)
        assert r.status_code == 400 and r.json()["field"] == "model", r.json()
    r = await api.client.post("/api/fleet/spawn", json={"repository": str(repo)}, headers=h)
    assert r.status_code == 400 and r.json()["field"] in ("description", "task_type")
    keyed = {**h, "Idempotency-Key": "job-1"}
    first = await api.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=keyed)
    assert first.status_code == 201
    again = await api.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=keyed)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    denied = await api.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=h)
    assert denied.status_code == 403
    doc = denied.json()
    assert (doc["error"], doc["active"], doc["limit"]) == ("spawn_denied", 1, 1) and doc["hint"]
    queued = await api.client.post("/api/fleet/spawn?queue=true", json=spawn_body(repo), headers=h)
    assert queued.status_code == 202 and queued.json()["position"] == 1
    status = (await api.client.get("/api/fleet/status", headers=h)).json()
    assert (status["active"], status["queued"]) == (1, 1)


async def test_tenants_and_tiers(api: Api, repo: Path) -> None:
    alice, bob = await api.as_("alice"), await api.as_("bob")
    task = (await api.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=alice)).json()
    for method, path in [("GET", ""), ("POST", "/stop"), ("GET", "/logs"), ("DELETE", "")]:
        r = await api.client.request(method, f"/api/fleet/tasks/{task['id']}{path}", headers=bob)
        assert r.status_code == 404, (method, path, r.text)
    assert (await api.client.get("/api/fleet/status", headers=bob)).json()["tasks"] == []
    r = await api.client.get("/api/fleet/status?all=true", headers=alice)
    assert r.status_code == 403
    boss = await api.as_("root", Tier.SOVEREIGN)
    assert (await api.client.get("/api/fleet/status?all=true", headers=boss)).json()["active"] == 1
    viewer = await api.as_("vera", Tier.OBSERVER)
    assert (await api.client.get("/api/fleet/status", headers=viewer)).status_code == 200
    r = await api.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=viewer)
    assert r.status_code == 403 and "builder" in r.json()["message"]
    assert (await api.client.get("/api/fleet/status?limit=0", headers=alice)).status_code == 400


async def test_forged_identities_are_refused(api: Api, repo: Path) -> None:
    await api.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=await api.as_())
    # No token, whatever identity headers claim.
    r = await api.client.get("/api/fleet/status",
                             headers={"x-operator-id": "alice", "x-operator-tier": "sovereign"})  # fmt: skip
    assert r.status_code == 401
    # A valid token for bob with headers claiming alice: bob's (empty) view.
    forged = {**await api.as_("bob"), "x-operator-id": "alice", "x-fleet-operator-id": "alice"}
    assert (await api.client.get("/api/fleet/status", headers=forged)).json()["tasks"] == []
    kid, _ = await api.keys.signer()
    claims = {"sub": "alice", "tier": "sovereign", "aud": AUDIENCE, "iss": ISSUER,
              "iat": int(time.time()), "exp": int(time.time()) + 600, "jti": str(uuid.uuid4())}  # fmt: skip
    unsigned = jwt.encode(claims, key=None, algorithm="none", headers={"kid": kid})
    public_jwk = json.dumps((await api.keys.jwks())["keys"][0]).encode()
    hs256 = forge_hs256(claims, kid, public_jwk)  # the public key used as an HMAC secret
    short = await api.token(ttl=timedelta(minutes=1))
    _, private = await api.keys.signer()
    wrong_aud = jwt.encode({**claims, "aud": "other"}, private, algorithm="ES256",
                           headers={"kid": kid})  # fmt: skip
    unknown_kid = jwt.encode(claims, private, algorithm="ES256", headers={"kid": "nope"})
    for token in (unsigned, hs256, wrong_aud, unknown_kid, "not.a.jwt"):
        r = await api.client.get("/api/fleet/status", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 401, token
        assert r.json()["error"] == "unauthorized"
    good = await api.client.get("/api/fleet/status", headers={"Authorization": f"Bearer {short}"})
    assert good.status_code == 200  # a 1-minute token is valid until it expires


async def test_jwks_health_metrics_openapi(api: Api) -> None:
    r = await api.client.get("/.well-known/jwks.json")
    assert r.status_code == 200 and "max-age=" in r.headers["cache-control"]
    keys = r.json()["keys"]
    assert keys and all(k["alg"] == "ES256" and k["kid"] for k in keys)
    metrics = await api.client.get("/metrics")
    assert metrics.status_code == 200 and "fleet_tasks" in metrics.text
    assert metrics.headers["content-type"].startswith("text/plain")
    assert "fleet_monitor_cycle_seconds_bucket" in metrics.text
    spec = (await api.client.get("/openapi.json")).json()
    assert spec["openapi"].startswith("3.") and "/api/fleet/spawn" in spec["paths"]
    assert "text/plain" in spec["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert (await api.client.get("/docs")).status_code == 200


async def test_health_says_only_ok_without_a_token(api: Api, repo: Path) -> None:
    h = await api.as_()
    r = await api.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=h)
    assert r.status_code == 201, r.text
    # The monitor does not run in this fixture: degraded, and nothing more without a token.
    r = await api.client.get("/healthz")
    assert r.status_code == 200 and r.json() == {"ok": False, "status": "degraded"}
    builder = (await api.client.get("/healthz", headers=h)).json()
    assert builder["database"] == "ok" and builder["monitor"]["running"] is False
    assert "last_error" not in builder["monitor"] and "forges" not in builder["monitor"]
    admin = (await api.client.get("/healthz", headers=await api.as_("root", Tier.SOVEREIGN))).json()
    assert {"last_error", "forges"} <= set(admin["monitor"])
    bad = await api.client.get("/healthz", headers={"Authorization": "Bearer not.a.jwt"})
    assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"


async def test_metrics_figures_are_cached(pg: Pg, su: Any, tmp_path: Path, repo: Path) -> None:
    clock = FakeClock()
    settings = api_settings(pg, tmp_path, "metrics-host")
    async with api_server(settings, clock=clock) as (url, engine, keys):  # noqa: SIM117
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            api = Api(client, keys, settings, engine)

            async def proposed_gauge() -> str:
                text = (await client.get("/metrics")).text
                return next(line for line in text.splitlines()
                            if line.startswith('fleet_tasks{status="running"}'))  # fmt: skip

            assert await proposed_gauge() == 'fleet_tasks{status="running"} 0.0'
            r = await client.post(
                "/api/fleet/spawn", json=spawn_body(repo), headers=await api.as_()
            )
            assert r.status_code == 201, r.text
            clock.advance(4.9)  # scrapes within 5 s are served the figures read before
            assert await proposed_gauge() == 'fleet_tasks{status="running"} 0.0'
            clock.advance(0.2)
            assert await proposed_gauge() == 'fleet_tasks{status="running"} 1.0'


async def test_options_and_unknown_methods_answer_405_with_allow(api: Api) -> None:
    h = await api.as_()
    path = f"/api/fleet/tasks/{uuid.uuid4()}"
    for method in ("OPTIONS", "PATCH", "PUT"):
        r = await api.client.request(method, path, headers=h)
        assert r.status_code == 405, (method, r.text)
        assert r.headers["allow"] == "DELETE, GET"  # both routes of the path, not the first
        assert r.json()["error"] == "method_not_allowed"
    r = await api.client.options("/api/fleet/spawn")
    assert (r.status_code, r.headers["allow"]) == (405, "POST")


async def test_events_stream(api: Api, repo: Path) -> None:
    h = await api.as_()
    lines: list[str] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async with api.client.stream("GET", "/api/fleet/events", headers=h) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                lines.append(line)
                if line == ": connected":
                    ready.set()  # subscribed: every event from now on is delivered
                if line.startswith("event: spawned"):
                    return

    listener = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 10)
    await api.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=h)
    await asyncio.wait_for(listener, 10)
    assert any(line.startswith("data: ") and '"status_changed"' in line for line in lines)


async def test_events_stream_never_carries_another_operators_events(api: Api, repo: Path) -> None:
    alice, bob = await api.as_("alice"), await api.as_("bob")
    seen: list[dict[str, Any]] = []
    ready = asyncio.Event()

    async def listen() -> None:
        async with api.client.stream("GET", "/api/fleet/events", headers=bob) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line == ": connected":
                    ready.set()
                if line.startswith("data: "):
                    seen.append(json.loads(line.removeprefix("data: ")))
                    if seen[-1]["type"] == "spawned":
                        return

    listener = asyncio.create_task(listen())
    await asyncio.wait_for(ready.wait(), 10)
    r = await api.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=alice)
    assert r.status_code == 201, r.text
    await api.engine.conductor.repositories.grant("repo", "bob", by="admin")
    # Then bob's own spawn: the bus delivers in order, so once bob's stream has his `spawned`
    # event, every event of alice's spawn has been through his filter.
    r = await api.client.post("/api/fleet/spawn", json=spawn_body(repo), headers=bob)
    assert r.status_code == 201, r.text
    await asyncio.wait_for(listener, 10)
    assert seen and {e["operator_id"] for e in seen} == {"bob"}
    assert {e["task_id"] for e in seen if e.get("task_id")} == {r.json()["id"]}


async def test_request_ids(api: Api) -> None:
    r = await api.client.get("/healthz", headers={"X-Request-Id": "req-123"})
    assert r.headers["x-request-id"] == "req-123"
    other = await api.client.get("/healthz")
    assert other.headers["x-request-id"] and other.headers["x-request-id"] != "req-123"


async def test_a_json_body_without_its_content_type(api: Api, repo: Path) -> None:
    """`curl -d '{...}'` (the README's example) sends application/x-www-form-urlencoded; some
    clients send no type at all: both are read as JSON. Another type is named in the 400."""
    h = await api.as_(tier=Tier.ARCHITECT)
    form = {**h, "Content-Type": "application/x-www-form-urlencoded"}
    body = json.dumps(spawn_body(repo, "curl's default type [demo:hang]")).encode()
    r = await api.client.post("/api/fleet/spawn", content=body, headers=form)
    assert r.status_code == 201, r.text
    assert r.json()["description"] == "curl's default type [demo:hang]"
    body = json.dumps(spawn_body(repo, "no type at all [demo:hang]")).encode()
    r = await api.client.post("/api/fleet/spawn", content=body, headers=h)
    assert "content-type" not in r.request.headers
    assert r.status_code == 201, r.text
    r = await api.client.post("/api/fleet/spawn", content=b"{not json", headers=form)
    assert r.status_code == 400 and r.json()["error"] == "bad_input"
    plain = {**h, "Content-Type": "text/plain"}
    r = await api.client.post("/api/fleet/spawn", content=body, headers=plain)
    assert r.status_code == 400 and r.json() == {
        "error": "bad_input",
        "field": "Content-Type",
        "message": "send the body as JSON with Content-Type: application/json, not text/plain",
    }
    status = (await api.client.get("/api/fleet/status", headers=h)).json()
    assert status["active"] == 2


# -- repositories: granted, not guessed ----------------------------------------------------------


async def test_repository_not_granted_is_one_answer(api: Api, repo: Path, tmp_path: Path) -> None:
    """bob cannot spawn on alice's repository, nor learn whether a path exists, is a
    repository or is someone else's: one status, code and message shape for all."""
    bob = await api.as_("bob")
    plain = tmp_path / "plain"
    plain.mkdir()
    (tmp_path / "file").write_text("x")
    own = tmp_path / "bobs"  # a repository on disk that nobody registered
    own.mkdir()
    git(own, "init", "-q")
    refs = [str(repo), f"{repo}/", "repo", str(tmp_path / "missing"), str(plain),
            str(tmp_path / "file"), str(own), "/etc", "no-such-name"]  # fmt: skip
    for ref in refs:
        body = {**spawn_body(repo), "repository": ref}
        r = await api.client.post("/api/fleet/spawn", json=body, headers=bob)
        assert r.status_code == 404, (ref, r.text)
        assert r.json() == {"error": "repository_not_found", "field": "repository",
                            "message": f"no repository named {ref!r} is granted to you"}  # fmt: skip
    # The API never registers a repository by itself, not even one its OS user owns.
    assert [r.name for r in await api.engine.conductor.repositories.list_for(Tenant.admin())] == [
        "repo"
    ]
    assert (await api.client.get("/api/fleet/repos", headers=bob)).json() == []
    assert (await api.client.get("/api/fleet/status", headers=bob)).json()["tasks"] == []
    # Not a name and not an absolute path: bad input, decided from the text alone.
    r = await api.client.post("/api/fleet/spawn", json={**body, "repository": "a/b"}, headers=bob)
    assert r.status_code == 400 and r.json()["field"] == "repository"


async def test_repos_route_lists_the_callers_own(api: Api, repo: Path) -> None:
    await api.engine.conductor.repositories.grant("repo", "carol", by="root")
    alice = (await api.client.get("/api/fleet/repos", headers=await api.as_())).json()
    assert [(r["name"], r["path"], r["operators"]) for r in alice] == [
        ("repo", str(repo.resolve()), ["alice"])  # her own grant only, not carol's
    ]
    r = await api.client.get("/api/fleet/repos?all=true", headers=await api.as_())
    assert r.status_code == 403
    boss = await api.as_("root", Tier.SOVEREIGN)
    every = (await api.client.get("/api/fleet/repos?all=true", headers=boss)).json()
    assert every[0]["operators"] == ["alice", "carol"]
    assert (await api.client.get("/api/fleet/repos", headers=boss)).json() == []  # not granted


async def test_bob_cannot_merge_on_a_repository_not_granted(api: Api, repo: Path, su: Any) -> None:
    """A ready task of bob's on alice's repository (granted once, then revoked): the merge is
    refused before the forge is asked, and alice's main is untouched."""
    head = git(repo, "rev-parse", "main")
    task_id = await su.fetchval(
        "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description, "
        "branch, repository, status, pr_number, ci_status) VALUES ('bob', 'demo', 'm', "
        "'docs', 'd', 'fleet/x', $1, 'ready', 1, 'passing') RETURNING id",
        str(repo.resolve()),
    )
    bob, alice = await api.as_("bob"), await api.as_("alice")
    r = await api.client.post(f"/api/fleet/tasks/{task_id}/merge", headers=bob)
    assert r.status_code == 404 and r.json()["error"] == "repository_not_found", r.text
    r = await api.client.post(f"/api/fleet/tasks/{task_id}/merge", headers=alice)
    assert r.status_code == 404 and r.json()["error"] == "not_found"  # not her task
    assert git(repo, "rev-parse", "main") == head
    # With the grant, the same merge reaches the forge (which has no such PR).
    await api.engine.conductor.repositories.grant("repo", "bob", by="root")
    r = await api.client.post(f"/api/fleet/tasks/{task_id}/merge", headers=bob)
    assert r.status_code == 409 and r.json()["error"] != "repository_not_found", r.text
    assert git(repo, "rev-parse", "main") == head


async def test_admin_repo_routes(api: Api, repo: Path, tmp_path: Path, su: Any) -> None:
    boss, builder = await api.as_("root", Tier.SOVEREIGN), await api.as_("bob")
    other = tmp_path / "other"
    other.mkdir()
    git(other, "init", "-q", "-b", "main")
    git(other, "commit", "-q", "--allow-empty", "-m", "initial")
    body = {"path": str(other), "grants": ["bob"]}
    r = await api.client.post("/api/fleet/repos", json=body, headers=builder)
    assert r.status_code == 403
    before = await su.fetchval("SELECT count(*) FROM fleet_repository_grants")
    for bad, field in (({"path": "relative"}, "path"), ({"path": str(tmp_path)}, "path"),
                       ({"name": "a b"}, "name"), ({"grants": ["x y"]}, "grants.0"),
                       ({"extra": 1}, "extra")):  # fmt: skip
        r = await api.client.post("/api/fleet/repos", json={**body, **bad}, headers=boss)
        assert r.status_code == 400 and r.json()["field"] == field, (bad, r.text)
    assert await su.fetchval("SELECT count(*) FROM fleet_repository_grants") == before
    r = await api.client.post("/api/fleet/repos", json=body, headers=boss)
    assert r.status_code == 201 and r.json()["name"] == "other", r.text
    assert (await api.client.post("/api/fleet/repos", json=body, headers=boss)).status_code == 409
    spawned = await api.client.post("/api/fleet/spawn", headers=builder,
                                    json=spawn_body(Path("other"), "wait [demo:hang]"))  # fmt: skip
    assert spawned.status_code == 201 and spawned.json()["repository"] == str(other.resolve())
    r = await api.client.post("/api/fleet/repos/other/grants", json={"operator": "carol"},
                              headers=boss)  # fmt: skip
    assert r.status_code == 200 and r.json()["operators"] == ["bob", "carol"]
    r = await api.client.delete("/api/fleet/repos/other/grants/bob", headers=boss)
    assert r.status_code == 200 and r.json()["operators"] == ["carol"]
    r = await api.client.post("/api/fleet/spawn", json=spawn_body(Path("other")), headers=builder)
    assert r.status_code == 404  # revoked: bob's running task stays, new spawns do not
    r = await api.client.delete("/api/fleet/repos/other", headers=boss)
    assert r.status_code == 409  # bob's task still runs there
    stop = await api.client.post(f"/api/fleet/tasks/{spawned.json()['id']}/stop", headers=builder)
    assert stop.status_code == 200
    assert (await api.client.delete("/api/fleet/repos/other", headers=boss)).status_code == 200
    assert (await api.client.delete("/api/fleet/repos/other", headers=boss)).status_code == 404
    r = await api.client.delete("/api/fleet/repos/a%20b", headers=boss)
    assert r.status_code == 400 and r.json()["field"] == "name"
