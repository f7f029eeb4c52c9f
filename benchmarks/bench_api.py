"""`GET /api/fleet/status` requests per second through JWT + RLS ÷ a bare FastAPI route on the
same server, in the same run (goal >= 0.5).

One process, one event loop: a throwaway embedded PostgreSQL cluster, the engine
(`running_engine(..., background=False)`: verbs only, no monitor), and the app of
`fleet --headless` (`create_app(engine, keys)`) served by uvicorn on 127.0.0.1 with one more
route added for the baseline: `GET /bare`, an async handler returning `{"ok": true}`. Both
routes go through the same ASGI stack (uvicorn's h11 protocol, Starlette, FastAPI routing, the
app's metrics middleware); what /status adds is its own work:

- the bearer token: header parsing, ES256 signature verification (PyJWT + cryptography; the
  public key comes from the key store's in-memory cache), claim checks;
- the conductor's `status`: three tenant transactions from the engine's pool (BEGIN +
  set_config, the query, COMMIT; RLS scopes each to the caller): the operator's queue, the
  counts by status, the newest `limit` tasks;
- every row parsed into a `TaskRecord`, dumped to JSON-ready dicts, validated again against
  the route's `response_model` and serialised by FastAPI.

The operator `bench` (tier builder) has `--tasks` tasks (default 10; all returned, the route's
default limit is 50). One token, issued once, sent on every request. A load generator in the
same loop (httpx.AsyncClient, keep-alive, one pool of `--concurrency` connections) sends
`--per-round` requests per round with `--concurrency` workers; every answer must be 200 (the
script exits 1 otherwise). Rounds are interleaved (/status and /bare alternate, the order
rotating); medians, and min/max of the per-round ratios. The client's own cost (httpx, about
as much CPU per request as the bare route's server side) is in both numbers, so the ratio of
the server-side costs alone is lower than the one printed: `--profile` shows where the time of
/status rounds goes.

    python benchmarks/bench_api.py [--rounds 7] [--per-round 2000] [--concurrency 8]
                                   [--tasks 10] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import io
import os
import platform
import pstats
import shutil
import socket
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import uvicorn

from fleet_core.api.app import create_app
from fleet_core.auth.keys import KeyStore
from fleet_core.auth.tokens import issue_token
from fleet_core.config import Settings
from fleet_core.db.connect import cluster_for
from fleet_core.db.database import Tenant
from fleet_core.engine import running_engine
from fleet_core.headless import Server
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import AgentType, NewTask, TaskType, Tier
from fleet_core.registry import TaskRegistry

OPERATOR = "bench"
STATUS = "/api/fleet/status"
BARE = "/bare"
# States the seeded tasks cycle through, by their path from `proposed`.
S = TaskStatus
PATHS: list[list[TaskStatus]] = [
    [S.SPAWNING, S.RUNNING],
    [S.SPAWNING, S.FAILED],
    [S.CANCELLED],
    [S.SPAWNING, S.RUNNING, S.PR_CREATED],
    [],
]
PACKAGES = ["fastapi", "starlette", "uvicorn", "h11", "httpx", "pydantic", "PyJWT",
            "cryptography", "asyncpg"]  # fmt: skip


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def seed(reg: TaskRegistry, n: int) -> None:
    for i in range(n):
        rec = await reg.create(
            NewTask(
                agent_type=AgentType.DEMO,
                model="demo",
                task_type=TaskType.FEATURE,
                description=f"bench {i}: a description of the usual length for a task",
                branch=f"fleet/bench-{i}",
                repository="/srv/repo",
            )
        )
        for status in PATHS[i % len(PATHS)]:
            rec = await reg.transition(rec.id, status, expected_version=rec.version)


async def drive(client: httpx.AsyncClient, path: str, n: int, concurrency: int) -> float:
    """n GETs of `path` by `concurrency` workers; requests per second. Every answer is 200."""
    left = n
    bad: list[int] = []

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            r = await client.get(path)
            if r.status_code != 200:
                bad.append(r.status_code)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    rate = n / (time.perf_counter() - t0)
    if bad:
        raise SystemExit(f"{path}: {len(bad)} answers were not 200: {sorted(set(bad))}")
    return rate


async def main(rounds: int, per_round: int, concurrency: int, tasks: int, profile: bool) -> int:
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-api-"))
    settings = Settings(
        data_dir=root / "data",
        worktree_dir=root / "worktrees",
        host_id="bench-host",
        key_encryption_key=base64.b64encode(os.urandom(32)).decode(),
    )
    cluster = cluster_for(settings)
    rates: dict[str, list[float]] = {STATUS: [], BARE: []}
    prof_text = ""
    try:
        async with running_engine(settings, background=False) as engine:
            keys = KeyStore(engine.db, KeyStore.load_master_key(settings))
            await keys.ensure_signing_key()
            await seed(TaskRegistry(engine.db, Tenant.operator(OPERATOR)), tasks)
            async with engine.db.pool.acquire() as conn:
                pg_version = await conn.fetchval("SHOW server_version")
            app = create_app(engine, keys)

            @app.get(BARE)
            async def bare() -> dict[str, bool]:
                return {"ok": True}

            port = free_port()
            config = uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None,
                                    access_log=False, lifespan="off")  # fmt: skip
            server = Server(config)
            serving = asyncio.create_task(server.serve())
            for _ in range(1000):  # up to 10 s
                if server.started:
                    break
                await asyncio.sleep(0.01)
            token = await issue_token(keys, OPERATOR, Tier.BUILDER)
            limits = httpx.Limits(max_connections=concurrency,
                                  max_keepalive_connections=concurrency)  # fmt: skip
            try:
                async with httpx.AsyncClient(
                    base_url=f"http://127.0.0.1:{port}",
                    headers={"Authorization": f"Bearer {token}"},
                    limits=limits,
                    timeout=30,
                ) as client:
                    doc = (await client.get(STATUS)).json()
                    assert len(doc["tasks"]) == tasks, doc
                    assert (await client.get(BARE)).json() == {"ok": True}
                    for path in (STATUS, BARE):  # warm-up: connections, caches, statements
                        await drive(client, path, max(200, per_round // 10), concurrency)
                    for r in range(rounds):
                        order = [STATUS, BARE] if r % 2 == 0 else [BARE, STATUS]
                        for path in order:
                            rates[path].append(await drive(client, path, per_round, concurrency))
                        print(f"round {r + 1}: status {rates[STATUS][-1]:6.0f}/s  "
                              f"bare {rates[BARE][-1]:6.0f}/s  "
                              f"ratio {rates[STATUS][-1] / rates[BARE][-1]:.2f}")  # fmt: skip
                    if profile:
                        prof = cProfile.Profile()
                        prof.enable()
                        await drive(client, STATUS, per_round, concurrency)
                        prof.disable()
                        prof.dump_stats("/tmp/api.prof")
                        buf = io.StringIO()
                        stats = pstats.Stats(prof, stream=buf)
                        stats.sort_stats("tottime").print_stats(30)
                        stats.sort_stats("cumulative").print_stats(45)
                        prof_text = buf.getvalue()
            finally:
                server.should_exit = True
                await serving
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)

    versions = ", ".join(f"{p} {version(p)}" for p in PACKAGES)
    print(f"\nPython {platform.python_version()}, PostgreSQL {pg_version}, {versions}")
    print(f"rounds={rounds} per_round={per_round} concurrency={concurrency} tasks={tasks}")
    report(f"GET {STATUS} (JWT + RLS)", rates[STATUS])
    report(f"GET {BARE}", rates[BARE])
    ratios = [s / b for s, b in zip(rates[STATUS], rates[BARE], strict=True)]
    med = statistics.median(ratios)
    print(f"ratio status / bare: median {med:.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
          f"  goal >= 0.5: {'met' if med >= 0.5 else 'MISSED'}")  # fmt: skip
    if prof_text:
        print(f"\ncProfile of one round of {per_round} GET {STATUS} (client and server):")
        print(prof_text)
    return 0


def report(name: str, rates: list[float]) -> None:
    print(f"{name:32s} median {statistics.median(rates):6.0f}/s  {sorted(round(x) for x in rates)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--per-round", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    sys.exit(asyncio.run(main(args.rounds, args.per_round, args.concurrency, args.tasks,
                              args.profile)))  # fmt: skip
