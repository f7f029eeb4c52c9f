"""Property-based fuzzing of the HTTP API from its own OpenAPI document, with schemathesis.

A real uvicorn on 127.0.0.1 over the real engine and the session's embedded PostgreSQL (the
pattern of test_api.py). schemathesis builds hypothesis strategies for every operation under
/api/fleet plus /healthz, /metrics and /.well-known/jwks.json from /openapi.json: valid inputs
(positive) and inputs that break the schema (negative), a bounded number of each, derandomized
so CI sees the same cases every run; then its coverage phase (boundary values, missing
parameters, undeclared methods such as OPTIONS). Requests carry a builder token for alice (an
admin's for the admin routes) unless the case is about a missing or broken Authorization
header. Every check schemathesis has runs on every response (`--checks all`): no 5xx; status
code, content type, headers and body as declared; schema-valid input accepted (no 400) and
invalid input refused; missing auth refused; an undeclared method answered 405 with a
matching `Allow`; and (seeded ids) bob's task is 404 to alice whatever she does to it while
hers are always found.

The hypothesis loop is synchronous (schemathesis sends with requests), so it runs in a worker
thread while the server keeps serving on the test's event loop.

No agent starts in a real repository: every `repository` the fuzzer makes is replaced by a
path that does not exist and is granted to nobody (a spawn is then refused: 404
`repository_not_found`), and the seeded tasks that the fixed-id cases act on (stop, retry,
merge, delete, logs) point at a missing repository too. The token is a builder's, so the
repositories' admin routes answer 403.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks
from schemathesis.core.parameters import ParameterLocation
from schemathesis.generation.meta import negated_parameters

from conftest import Pg, api_server, api_settings, new_task
from fleet_core.auth.tokens import issue_token
from fleet_core.db.database import Tenant
from fleet_core.engine import Engine
from fleet_core.lifecycle import TERMINAL, TaskStatus
from fleet_core.models import CiStatus, Tier
from fleet_core.registry import TaskRegistry

MAX_EXAMPLES = 25  # per operation and generation mode
FUZZED = ("/api/fleet/", "/healthz", "/metrics", "/.well-known/jwks.json")
ADMIN = "/api/fleet/admin/"  # fuzzed with an admin's token (root's), after the others
STREAMS = {"/api/fleet/events"}  # never ends: checked by hand below
EXPECTED = {
    "POST /api/fleet/spawn",
    "GET /api/fleet/status",
    "GET /api/fleet/tasks/{task_id}",
    "POST /api/fleet/tasks/{task_id}/stop",
    "POST /api/fleet/tasks/{task_id}/retry",
    "POST /api/fleet/tasks/{task_id}/merge",
    "GET /api/fleet/tasks/{task_id}/logs",
    "GET /api/fleet/tasks/{task_id}/reviews",
    "GET /api/fleet/tasks/{task_id}/diff",
    "DELETE /api/fleet/tasks/{task_id}",
    "GET /api/fleet/secrets",
    "PUT /api/fleet/secrets/{name}",
    "DELETE /api/fleet/secrets/{name}",
    "GET /api/fleet/notifications",
    "POST /api/fleet/notifications/redrive",
    "POST /api/fleet/notifications/test",
    "GET /api/fleet/notifications/channels",
    "PUT /api/fleet/notifications/channels/discord",
    "PUT /api/fleet/notifications/channels/telegram",
    "PUT /api/fleet/notifications/channels/desktop",
    "DELETE /api/fleet/notifications/channels/discord",
    "DELETE /api/fleet/notifications/channels/telegram",
    "DELETE /api/fleet/notifications/channels/desktop",
    "GET /api/fleet/admin/tokens",
    "POST /api/fleet/admin/tokens/{jti}/revoke",
    "PUT /api/fleet/admin/operators/{operator}/tier",
    "GET /api/fleet/repos",
    "POST /api/fleet/repos",
    "POST /api/fleet/repos/{name}/grants",
    "DELETE /api/fleet/repos/{name}/grants/{operator}",
    "DELETE /api/fleet/repos/{name}",
    "GET /healthz",
    "GET /metrics",
    "GET /.well-known/jwks.json",
}
load_all_checks()
# Every check schemathesis has (`--checks all`), in both generation modes.
CHECKS_ALL = list(CHECKS.get_all())
S = TaskStatus
# Seeded tasks of alice's, by the path from `proposed` that puts them where they are.
SEEDS: dict[str, list[TaskStatus]] = {
    "failed": [S.SPAWNING, S.FAILED],
    "ready": [S.SPAWNING, S.RUNNING, S.PR_CREATED, S.REVIEWING, S.READY],
    "rejected": [S.SPAWNING, S.RUNNING, S.PR_CREATED, S.REVIEWING, S.REJECTED],
    "cancelled": [S.CANCELLED],
}
# These hold a slot of alice's (a builder: one); not seeded for retry, which needs it free.
HOLDING: dict[str, list[TaskStatus]] = {"proposed": [], "running": [S.SPAWNING, S.RUNNING]}


@dataclass
class Served:
    base_url: str
    token: str
    admin_token: str
    engine: Engine
    nowhere: Path


@dataclass
class Findings:
    failures: list[str] = field(default_factory=list)
    calls: dict[str, int] = field(default_factory=dict)
    statuses: dict[str, set[int]] = field(default_factory=dict)
    unnegatable: list[str] = field(default_factory=list)


@pytest.fixture
async def served(pg: Pg, su: Any, tmp_path: Path) -> AsyncIterator[Served]:
    async with api_server(api_settings(pg, tmp_path, "fuzz-host")) as (url, engine, keys):
        token = await issue_token(keys, "alice", Tier.BUILDER)
        admin = await issue_token(keys, "root", Tier.SOVEREIGN)
        yield Served(url, token, admin, engine, tmp_path / "no-such-repository")


async def seed(engine: Engine, nowhere: Path, *, holding: bool) -> tuple[list[str], str]:
    """A clean slate for alice (her unfinished tasks cancelled), then fresh tasks of hers in
    the states of SEEDS (and HOLDING), and a running task of bob's; all in a repository that
    does not exist. Returns alice's ids and bob's."""
    alice = TaskRegistry(engine.db, Tenant.operator("alice"))
    for rec in await alice.query(status=[s for s in TaskStatus if s not in TERMINAL], limit=1000):
        await alice.transition(rec.id, S.CANCELLED, expected_version=rec.version)
    engine.conductor.governor.invalidate("alice")
    ids = []
    for name, path in (SEEDS | HOLDING if holding else SEEDS).items():
        ids.append(await make_task(alice, name, path, nowhere))
    bob = TaskRegistry(engine.db, Tenant.operator("bob"))
    return ids, await make_task(bob, "bob", HOLDING["running"], nowhere)


async def make_task(reg: TaskRegistry, name: str, path: list[TaskStatus], nowhere: Path) -> str:
    rec = await reg.create(
        new_task(
            description=f"fuzz seed {name}",
            branch=f"fleet/fuzz-{name}-{uuid4().hex[:8]}",
            repository=str(nowhere),
            host_id="fuzz-host",
        )
    )
    for status in path:
        pr = {"pr_number": 7, "ci_status": CiStatus.PASSING} if status is S.PR_CREATED else {}
        rec = await reg.transition(rec.id, status, expected_version=rec.version, update=pr)
    return str(rec.id)


def fuzz(served: Served, spec: dict[str, Any], loop: asyncio.AbstractEventLoop) -> Findings:
    """Every fuzzed operation in both generation modes, then schemathesis' coverage phase
    (boundary values, missing parameters, undeclared methods); failures are collected, not
    raised. Runs in a worker thread; the seeding goes through the server's loop."""
    schema = schemathesis.openapi.from_dict(spec)
    session = requests.Session()
    found = Findings()
    operations = [op.ok() for op in schema.get_all_operations()]
    targets = [op for op in operations if op.path.startswith(FUZZED) and op.path not in STREAMS]
    targets.sort(key=lambda op: op.path.startswith(ADMIN))
    assert {f"{op.method.upper()} {op.path}" for op in targets} == EXPECTED

    def no_real_repository(case: Any) -> Any:
        body = case.body
        if isinstance(body, dict) and isinstance(body.get("repository"), str):
            case.body = {**body, "repository": str(served.nowhere / "fuzzed")}
        return case

    for op in targets:
        label = f"{op.method.upper()} {op.path}"
        token = served.admin_token if op.path.startswith(ADMIN) else served.token
        auth = {"Authorization": f"Bearer {token}"}
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            checks = list(CHECKS_ALL)
            strategy = op.as_strategy(generation_mode=mode)
            if "{task_id}" in op.path and mode is GenerationMode.POSITIVE:
                # Random ids (404) and fresh seeded tasks in every state, so that each
                # verb meets each state before an earlier verb has moved the tasks on.
                made = seed(served.engine, served.nowhere, holding=not op.path.endswith("/retry"))
                ids, foreign = asyncio.run_coroutine_threadsafe(made, loop).result(30)
                fixed = [op.as_strategy(generation_mode=mode, path_parameters={"task_id": t})
                         for t in [*ids, foreign]]  # fmt: skip
                strategy = st.one_of(strategy, *fixed)
                checks.append(not_found_unless(ids, foreign))
            cases = strategy.map(no_real_repository).map(
                lambda case, auth=auth: with_auth(case, auth)
            )
            run_operation(f"{label} [{mode.value}]", mode, checks, cases, session,
                          served.base_url, found)  # fmt: skip
        run_coverage(schema, op, label, auth, session, served, found)
    return found


def with_auth(case: Any, auth: dict[str, str]) -> Any:
    """The case with our token, unless the case is about a missing or broken Authorization
    header (then the server must refuse it, and does with 401)."""
    negated = {(name.lower(), loc) for name, loc in negated_parameters(case.meta)}
    if ("authorization", ParameterLocation.HEADER) not in negated:
        case.headers = {**(case.headers or {}), **auth}
    return case


def run_coverage(
    schema: Any,
    op: Any,
    label: str,
    auth: dict[str, str],
    session: requests.Session,
    served: Served,
    found: Findings,
) -> None:
    """schemathesis' coverage phase for one operation, every check on each of its cases."""
    key = f"{label} [coverage]"
    cases = schema.iter_coverage_cases(
        op,
        generation_modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE],
        generation_config=schema.config.generation_for(operation=op, phase="coverage"),
    )
    for case in cases:
        if isinstance(case.body, dict) and isinstance(case.body.get("repository"), str):
            case.body = {**case.body, "repository": str(served.nowhere / "fuzzed")}
        case = with_auth(case, auth)
        response = case.call(base_url=served.base_url, session=session, timeout=30)
        found.calls[key] = found.calls.get(key, 0) + 1
        found.statuses.setdefault(key, set()).add(response.status_code)
        try:
            case.validate_response(response, checks=CHECKS_ALL)
        except (Exception, BaseExceptionGroup) as exc:
            found.failures.append(f"{key} {case.method} {case.formatted_path}:\n{exc}")


def not_found_unless(own: list[str], foreign: str) -> Callable[..., None]:
    """A check: bob's task is 404 to alice whatever she does to it; hers are always found
    until she deletes one (a 404 of hers may only say that it has no agent session)."""
    deleted: set[str] = set()

    def tenancy(ctx: Any, response: Any, case: Any) -> None:
        task_id = (case.path_parameters or {}).get("task_id")
        if task_id == foreign:
            assert response.status_code == 404, f"bob's task answered {response.status_code}"
        elif task_id in own and task_id not in deleted:
            missing = response.status_code == 404 and response.json()["error"] == "not_found"
            assert not missing, f"alice's task {task_id} was not found"
            if case.method.upper() == "DELETE" and response.status_code == 200:
                deleted.add(task_id)

    return tenancy


def run_operation(
    key: str,
    mode: GenerationMode,
    checks: list[Callable[..., Any]],
    strategy: Any,
    session: requests.Session,
    base_url: str,
    found: Findings,
) -> None:
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, timeout=30)
        found.calls[key] = found.calls.get(key, 0) + 1
        found.statuses.setdefault(key, set()).add(response.status_code)
        case.validate_response(response, checks=checks)

    try:
        run()
    except Unsatisfiable:
        # A free-form string in the path (a task id) and no query or body: nothing a request
        # could get wrong, so nothing to negate.
        if mode is not GenerationMode.NEGATIVE:
            raise
        found.unnegatable.append(key)
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is the latter
        found.failures.append(f"{key}:\n{exc}")


async def test_fuzz_api_from_openapi(served: Served) -> None:
    async with httpx.AsyncClient(base_url=served.base_url, timeout=30) as client:
        spec = (await client.get("/openapi.json")).json()
        found = await asyncio.to_thread(fuzz, served, spec, asyncio.get_running_loop())
        # The event stream never ends: its status, content type and first line by hand.
        declared = spec["paths"]["/api/fleet/events"]["get"]["responses"]
        auth = {"Authorization": f"Bearer {served.token}"}
        async with client.stream("GET", "/api/fleet/events", headers=auth) as r:
            assert str(r.status_code) in declared
            assert r.headers["content-type"].split(";")[0] in declared["200"]["content"]
            assert (await anext(r.aiter_lines())).startswith(":")
        r = await client.get("/api/fleet/events")  # no token
        assert r.status_code == 401 and str(r.status_code) in declared
        assert r.json()["error"] == "unauthorized"
    summary = "\n".join(f"{k}: {n} calls, statuses {sorted(found.statuses[k])}"
                        for k, n in sorted(found.calls.items()))  # fmt: skip
    assert not found.failures, "\n\n".join(found.failures) + "\n\n" + summary
    # Every operation was called in both modes and the coverage phase, except those with
    # nothing to negate.
    assert len(found.calls) + len(found.unnegatable) == 3 * len(EXPECTED), summary
    print(summary)
