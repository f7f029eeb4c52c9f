"""Reputation (T-8.2): the Beta posterior, cold keys, the figures from finished tasks in
PostgreSQL, GET /api/reputation/query over real HTTP, `fleet reputation`, and the router's
reputation step."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest

from conftest import Pg, api_server, api_settings, fleet, grant_repo
from fleet_core.auth.tokens import issue_token
from fleet_core.conductor import Actor, Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.demo import make_sample
from fleet_core.errors import BadInputError
from fleet_core.models import AgentType, SpawnRequest, TaskType, Tier
from fleet_core.review.reputation import Reputation, parse_key, reputations
from fleet_core.router import ModelRouter, RouteReason


def test_the_posterior() -> None:
    cold = Reputation("demo", "demo", "feature")
    assert cold.answer() == {"score": 0.5, "confidence": None, "n": 0}
    three = Reputation("demo", "demo", "feature", first=3)
    assert three.score == 0.8 and three.n == 3  # Beta(4, 1)
    sd = math.sqrt(4 * 1 / (5**2 * 6))
    assert three.confidence == round(1 - sd / math.sqrt(1 / 12), 4)
    mixed = Reputation("codex", "gpt-5.5", "refactor", first=1, retried=1, rejected=1,
                       abandoned=1)  # fmt: skip
    # alpha = 1 + 1 + 0.6 + 0.4 + 0 = 3; beta = 1 + 0 + 0.4 + 0.6 + 1 = 3
    assert (mixed.alpha, mixed.beta, mixed.score, mixed.n) == (3.0, 3.0, 0.5, 4)
    more = Reputation("codex", "gpt-5.5", "refactor", first=10, retried=10, rejected=10,
                      abandoned=10)  # fmt: skip
    assert more.score == 0.5 and (more.confidence or 0) > (mixed.confidence or 0)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("demo:demo", "must be <agent>:<model>:<task_type>"),
        ("copilot:m:feature", "unknown agent type 'copilot'"),
        ("demo:demo:chores", "unknown task type 'chores'"),
        ("demo: bad model:feature", "not a model name"),
    ],
)
def test_bad_routing_keys_name_the_field(key: str, message: str) -> None:
    with pytest.raises(BadInputError, match=message) as err:
        parse_key(key)
    assert err.value.field == "routingKey"
    assert parse_key("codex:gpt-5.5:refactor") == (AgentType.CODEX, "gpt-5.5", TaskType.REFACTOR)


def test_the_router_skips_a_model_with_a_poor_record() -> None:
    router = ModelRouter.from_config({"reputation_threshold": 0.6, "reputation_min_samples": 5})
    poor = {"claude-opus-4-6": (0.3, 8)}
    route = router.route(TaskType.FEATURE, scores=poor)
    assert route.model != "claude-opus-4-6" and route.reason is RouteReason.FALLBACK
    assert "claude-opus-4-6 reputation 0.30 < 0.6 over 8 tasks" in route.detail
    few = {"claude-opus-4-6": (0.3, 4)}  # not enough samples to judge
    assert router.route(TaskType.FEATURE, scores=few).model == "claude-opus-4-6"
    # the caller's own choice is never second-guessed
    assert router.route(TaskType.FEATURE, model="claude-opus-4-6", scores=poor).model == (
        "claude-opus-4-6"
    )
    with pytest.raises(BadInputError, match="reputation_min_samples"):
        ModelRouter.from_config({"reputation_min_samples": 0})


async def seed(db: Database, operator: str, model: str, status: str, retries: int = 0,
               context: dict[str, Any] | None = None) -> None:  # fmt: skip
    async with db.tx(Tenant.admin()) as conn:
        await conn.execute(
            "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description,"
            " branch, repository, status, retry_count, max_retries, failure_context)"
            " VALUES ($1, 'codex', $2, 'refactor', 'd', $3, '/r', $4, $5, 3, $6)",
            operator, model, f"fleet/{uuid4().hex[:8]}", status, retries, context,
        )  # fmt: skip


async def seed_outcomes(db: Database) -> None:
    await seed(db, "alice", "gpt-5.5", "merged")
    await seed(db, "bob", "gpt-5.5", "merged", 1, {"reason": "ci_failed"})
    rejected = {"reason": "ci_failed", "attempts": [{"attempt": 1, "reason": "review_rejected"}]}
    await seed(db, "alice", "gpt-5.5", "merged", 2, rejected)
    await seed(db, "bob", "gpt-5.5", "abandoned", 3, {"reason": "timeout"})
    await seed(db, "alice", "gpt-5.5", "running")  # not finished: not counted
    await seed(db, "alice", "o4-mini", "merged")


async def test_figures_from_finished_tasks_fleet_wide(db: Database) -> None:
    await seed_outcomes(db)
    found = {r.key: r for r in await reputations(db)}
    assert sorted(found) == ["codex:gpt-5.5:refactor", "codex:o4-mini:refactor"]
    gpt = found["codex:gpt-5.5:refactor"]
    assert (gpt.first, gpt.retried, gpt.rejected, gpt.abandoned) == (1, 1, 1, 1)
    assert gpt.answer() == {"score": 0.5, "confidence": gpt.confidence, "n": 4}


@pytest.fixture
async def served(pg: Pg, su: Any, tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    settings = api_settings(pg, tmp_path, "rep-host")
    async with api_server(settings) as (url, engine, keys):  # noqa: SIM117 (needs url)
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            token = await issue_token(keys, "carol", Tier.OBSERVER)
            client.headers["Authorization"] = f"Bearer {token}"
            yield client, engine


async def test_the_api_and_the_cli(served: tuple[httpx.AsyncClient, Any]) -> None:
    client, engine = served
    await seed_outcomes(engine.db)
    r = await client.get("/api/reputation/query", params={"routingKey": "codex:gpt-5.5:refactor"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["score"], body["n"]) == (0.5, 4) and 0 < body["confidence"] < 1
    cold = await client.get("/api/reputation/query",
                            params={"routingKey": "gemini:gemini-2.5-pro:docs"})  # fmt: skip
    assert cold.json() == {"score": 0.5, "confidence": None, "n": 0}
    bad = await client.get("/api/reputation/query", params={"routingKey": "gemini:x:poems"})
    assert bad.status_code == 400 and bad.json()["field"] == "routingKey"
    missing = await client.get("/api/reputation/query")
    assert missing.status_code == 400
    anonymous = await client.get("/api/reputation/query", headers={"Authorization": ""},
                                 params={"routingKey": "codex:gpt-5.5:refactor"})  # fmt: skip
    assert anonymous.status_code == 401
    shown = await asyncio.to_thread(fleet, "reputation", "--json")
    assert shown.returncode == 0, shown.stderr
    rows = {row["key"]: row for row in json.loads(shown.stdout)}
    assert rows["codex:gpt-5.5:refactor"]["n"] == 4
    assert rows["codex:o4-mini:refactor"]["score"] == round(2 / 3, 4)
    table = await asyncio.to_thread(fleet, "reputation")
    assert "codex:gpt-5.5:refactor" in table.stdout and "abandoned" in table.stdout


async def test_a_reputation_skip_is_explained_by_fleet_show(db: Database, tmp_path: Path) -> None:
    """The router passes demo-old over (3 abandoned docs tasks): the spawn keeps why, and
    `fleet show` (and --json) says it; a spawn that skipped nothing leaves no route line."""
    for _ in range(3):
        async with db.tx(Tenant.admin()) as conn:
            await conn.execute(
                "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description,"
                " branch, repository, status, retry_count, max_retries)"
                " VALUES ('bob', 'demo', 'demo-old', 'docs', 'd', $1, '/r', 'abandoned', 0, 0)",
                f"fleet/{uuid4().hex[:8]}",
            )
    repo = make_sample(tmp_path / "demo")
    await grant_repo(db, repo, "alice")
    routing = {"table": {"docs": {"agent": "demo", "model": "demo-old"}},
               "fallback": {"agent": "demo", "model": "demo"},
               "reputation_threshold": 0.6, "reputation_min_samples": 2}  # fmt: skip
    settings = Settings(data_dir=tmp_path / "data", host_id="rep-host", routing=routing,
                        secrets={"FLEET_DEMO_DELAY": "0"})  # fmt: skip
    c = Conductor.from_settings(settings, db)
    actor = Actor("alice", Tier.SOVEREIGN)
    try:
        ids = []
        for task_type in ("docs", "feature"):
            request = SpawnRequest.model_validate({
                "description": f"Write {task_type}", "repository": str(repo),
                "task_type": task_type, "agent_type": "demo",
            })  # fmt: skip
            out = await c.spawn(actor, request)
            assert out.task is not None
            ids.append(out.task.id)
        docs = await c.registry(actor).get(ids[0])
        assert docs.model == "demo"
        shown = await asyncio.to_thread(fleet, "show", str(docs.id))
        assert shown.returncode == 0, shown.stderr
        assert "\nroute: " in shown.stdout
        assert "skipped: demo-old reputation 0.20 < 0.6 over 3 tasks" in shown.stdout
        doc = json.loads((await asyncio.to_thread(fleet, "show", str(docs.id), "--json")).stdout)
        assert "demo-old reputation 0.20" in doc["route"]["detail"]
        other = await asyncio.to_thread(fleet, "show", str(ids[1]))
        assert other.returncode == 0 and "route:" not in other.stdout
    finally:
        await c.stop_engine()
        await c.runtime.tmux.kill_server()
