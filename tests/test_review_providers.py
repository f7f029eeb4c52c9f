"""HTTP reviewers against fake Anthropic, OpenAI and Gemini servers on 127.0.0.1 (the real
request and response shapes), alone and in the running lifecycle."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fake_providers import FakeProvider, serve, shutdown
from fleet_core.conductor import Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord
from fleet_core.monitor import Monitor
from fleet_core.review.http import HttpReviewer, ProviderError, gemini_schema
from fleet_core.review.prompt import review_prompt
from fleet_core.review.reviewers import ReviewRequest
from fleet_core.review.store import ReviewStore
from fleet_core.review.verdict import SCHEMA, parse_answer
from lifecycle_support import (
    QUICK_RETRIES,
    base_fields,
    conductors,
    spawn,
    until_status,
)

S = TaskStatus
KINDS = ["anthropic", "openai", "gemini"]


@pytest.fixture
def provider(request: pytest.FixtureRequest) -> Iterator[Callable[..., FakeProvider]]:
    made: list[FakeProvider] = []

    def start(kind: str, **script: list[str]) -> FakeProvider:
        fake = serve(FakeProvider(kind, dict(script)))
        made.append(fake)
        return fake

    yield start
    for fake in made:
        shutdown(fake)


def ask_request(focus: str = "logic") -> ReviewRequest:
    diff = "diff --git a/calc.py b/calc.py\n+++ b/calc.py\n@@ -1,1 +1,2 @@\n x\n+y\n"
    return ReviewRequest(focus, "Add y", diff, review_prompt(focus, "Add y", diff), 1, "abc",
                         "/r", "b", "alice", "demo")  # fmt: skip


@pytest.mark.parametrize("kind", KINDS)
async def test_each_provider_is_asked_in_its_own_shape(provider, kind: str) -> None:
    fake = provider(kind, logic=["request_changes"])
    reviewer = HttpReviewer(kind, "logic", api_key="k-1", base_url=fake.url, backoff_s=0)
    answer = parse_answer((await reviewer.ask(ask_request())).text)
    assert answer.verdict.value == "request_changes"
    assert answer.comments[0].path == "calc.py" and answer.comments[0].line == 3
    [seen] = fake.seen
    body = seen.body
    if kind == "anthropic":
        assert seen.headers["x-api-key"] == "k-1"
        assert body["tool_choice"] == {"type": "tool", "name": "submit_review"}
        assert body["tools"][0]["input_schema"] == SCHEMA
        assert body["max_tokens"] > 0 and body["model"] == "claude-sonnet-4-5"
    elif kind == "openai":
        assert seen.headers["authorization"] == "Bearer k-1"
        fmt = body["text"]["format"]
        assert (fmt["type"], fmt["strict"], fmt["schema"]) == ("json_schema", True, SCHEMA)
    else:
        assert seen.headers["x-goog-api-key"] == "k-1"
        assert seen.path == "/v1beta/models/gemini-2.5-pro:generateContent"
        config = body["generationConfig"]
        assert config["responseMimeType"] == "application/json"
        assert config["responseSchema"] == gemini_schema(SCHEMA)
        assert config["responseSchema"]["properties"]["verdict"]["type"] == "STRING"


@pytest.mark.parametrize("kind", KINDS)
async def test_429_and_503_are_retried_honouring_retry_after(provider, kind: str) -> None:
    fake = provider(kind, logic=["429", "429@date", "503"])
    reviewer = HttpReviewer(kind, "logic", api_key="k", base_url=fake.url, backoff_s=0)
    answer = parse_answer((await reviewer.ask(ask_request())).text)
    assert answer.verdict.value == "approve"
    assert fake.replies() == ["429", "429@date", "503", "approve"]
    assert reviewer.calls == 4


async def test_a_provider_that_keeps_failing_is_an_error(provider) -> None:
    fake = provider("openai", logic=["503"] * 5)
    reviewer = HttpReviewer("openai", "logic", api_key="k", base_url=fake.url, attempts=3)
    with pytest.raises(ProviderError, match="HTTP 503 after 3 attempts"):
        await reviewer.ask(ask_request())
    assert len(fake.seen) == 3


async def test_a_wrong_key_is_not_retried(provider) -> None:
    fake = provider("anthropic")
    reviewer = HttpReviewer("anthropic", "logic", api_key="", base_url=fake.url)
    with pytest.raises(ProviderError, match="HTTP 401"):
        await reviewer.ask(ask_request())
    assert reviewer.calls == 1


# -- in the lifecycle ----------------------------------------------------------------------


@pytest.fixture
async def engine(tmp_path: Path, db: Database) -> AsyncIterator[Callable[..., Any]]:
    async with conductors(db) as make:

        def build(fake: FakeProvider, **kw: Any) -> tuple[Conductor, Monitor]:
            key = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY",
                   "gemini": "GEMINI_API_KEY"}[fake.kind]  # fmt: skip
            fields = {**base_fields(tmp_path), **QUICK_RETRIES,
                      "secrets": {"FLEET_DEMO_DELAY": "0", key: "sk-test"},
                      "reviews": {"kind": fake.kind, "urls": {fake.kind: fake.url}}, **kw}  # fmt: skip
            return make(Settings(**fields))

        yield build


until = until_status


async def rows(c: Conductor, rec: TaskRecord) -> list[Any]:
    return await ReviewStore(c.db).for_task(Tenant.operator("alice"), rec.id)


async def test_three_approvals_from_anthropic_make_it_ready(engine, provider, sample) -> None:
    fake = provider("anthropic")
    c, m = engine(fake)
    rec = await spawn(c, sample, "Add a multiply function")
    ready = await until(c, m, rec.id, S.READY, S.REJECTED)
    assert ready.status is S.READY and (ready.review_status or {})["verdict"] == "approved"
    got = await rows(c, ready)
    assert {(r.kind, r.model, r.verdict) for r in got} == {
        ("anthropic", "claude-sonnet-4-5", "approve")
    }
    assert sorted(s.focus for s in fake.seen) == ["architecture", "logic", "security"]
    # the reviewers read the PR's diff against its base
    assert all(f"fleet-demo/{rec.id}.md" in s.body["messages"][0]["content"] for s in fake.seen)


async def test_openai_requests_changes_then_the_retry_is_approved(engine, provider, sample) -> None:
    fake = provider("openai", logic=["request_changes"])
    c, m = engine(fake)
    rec = await spawn(c, sample, "Add a square function", max_retries=2)
    ready = await until(c, m, rec.id, S.READY, S.ABANDONED)
    assert ready.status is S.READY and ready.retry_count == 1
    assert (ready.failure_context or {})["reason"] == "review_rejected"
    prompt = (Path(ready.worktree_path or "") / "fleet-demo" / f"{rec.id}.md").read_text()
    assert "calc.py:3: logic: validate the input here" in prompt
    assert fake.replies("logic") == ["request_changes", "approve"]


async def test_gemini_hung_reviewer_and_malformed_answer(engine, provider, sample) -> None:
    fake = provider("gemini", security=["hang"], architecture=["garbage", "approve"],
                    logic=["429"])  # fmt: skip
    c, m = engine(fake, review_timeout_minutes=0.05)  # 3 s
    rec = await spawn(c, sample, "Add a cube function")
    ready = await until(c, m, rec.id, S.READY, S.REJECTED)
    status = ready.review_status or {}
    assert ready.status is S.READY
    assert (status["verdict"], status["warning"], status["approvals"]) == (
        "timed_out",
        "review_timed_out",
        2,
    )
    by = {r.reviewer: r for r in await rows(c, ready)}
    assert (by["security"].verdict, by["security"].error) == ("comment", "timed out")
    assert by["architecture"].verdict == "approve"  # asked again after the malformed answer
    assert fake.replies("architecture") == ["garbage", "approve"]
    assert by["logic"].verdict == "approve" and fake.replies("logic") == ["429", "approve"]


async def test_an_engine_restarted_mid_review_keeps_the_verdicts_it_has(
    engine, provider, sample
) -> None:
    fake = provider("anthropic", security=["hang", "approve"])
    c, m = engine(fake)
    rec = await spawn(c, sample, "Add a modulo function")
    reviewing = await until(c, m, rec.id, S.REVIEWING, S.READY)
    assert reviewing.status is S.REVIEWING
    loop = asyncio.get_running_loop()
    end = loop.time() + 30
    while len(await rows(c, reviewing)) < 2 and loop.time() < end:
        await asyncio.sleep(0.05)
    assert sorted(r.reviewer for r in await rows(c, reviewing)) == ["architecture", "logic"]
    await c.stop_engine()  # the engine goes away with the security review unanswered
    assert c.reviews.running() == []
    c2, m2 = engine(fake)
    ready = await until(c2, m2, rec.id, S.READY, S.REJECTED)
    assert ready.status is S.READY and (ready.review_status or {})["approvals"] == 3
    assert fake.replies("logic") == ["approve"] and fake.replies("architecture") == ["approve"]
    assert fake.replies("security") == ["hang", "approve"]  # only the missing one asked again
