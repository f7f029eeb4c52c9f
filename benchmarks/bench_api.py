"""`GET /api/fleet/status` requests per second through JWT + RLS ÷ a bare FastAPI route on the
same server, in the same run (goal >= 0.5).

One process, one event loop: a throwaway embedded PostgreSQL cluster, the engine
(`running_engine(..., background=False)`: verbs only, no monitor), and the app of
`fleet --headless` (`create_app(engine, keys)`) served by uvicorn on 127.0.0.1 with one more
route added for the baseline: `GET /bare`, an async handler returning `{"ok": true}`. Both
routes go through the same stack (uvicorn's h11 protocol, Starlette, FastAPI routing, the
app's metrics middleware); what /status adds is its own work:

- the bearer token: a FastAPI dependency parses the header, verifies the ES256 signature
  (PyJWT + cryptography; the public key comes from the key store's in-memory cache) and the
  claims;
- the conductor's `status`: one tenant transaction from the engine's pool (BEGIN +
  set_config, the reads, COMMIT; RLS scopes it to the caller): the counts by status, the
  queued spawns, the newest `limit` tasks, each row parsed into a `TaskRecord`;
- the answer: `model_dump_json()` once (about 7.9 kB with 10 tasks, against 11 bytes).

The operator `bench` (tier builder) has `--tasks` tasks (default 10, in five states; all are
returned, the route's default limit is 50). One token, issued once, sent on every request.
The load generator runs in the same loop: `--client httpx` (default) is one
httpx.AsyncClient with a keep-alive pool of `--concurrency` connections; `--client raw` is a
minimal HTTP/1.1 client over `--concurrency` asyncio streams, whose own cost is close to
nothing, so that the server's share can be told apart from httpx's. `--per-round` requests
per round by `--concurrency` workers; every answer must be 200 (the script exits otherwise).
Rounds are interleaved (/status and /bare alternate, the order rotating); medians, min/max of
the per-round ratios, and the CPU time of the process per request (client + server + the
engine's pool; PostgreSQL runs in other processes). Then the parts of /status are timed
alone, without HTTP, one call at a time; `--profile` adds a cProfile of one /status round.

    python benchmarks/bench_api.py [--rounds 7] [--per-round 2000] [--concurrency 8]
                                   [--tasks 10] [--client httpx|raw] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import httpx
import uvicorn

from fleet_core.api.app import create_app
from fleet_core.auth.keys import KeyStore
from fleet_core.auth.tokens import issue_token, verify_token
from fleet_core.conductor import Actor
from fleet_core.config import Settings
from fleet_core.db.connect import cluster_for
from fleet_core.db.database import Tenant
from fleet_core.engine import Engine, running_engine
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


@dataclass(frozen=True)
class Piece:
    name: str
    wall_us: float
    cpu_us: float


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


class RawClient:
    """The cheapest keep-alive HTTP/1.1 client: one asyncio stream per worker, the request
    written by hand, the answer read by its Content-Length. Stands in for a client whose own
    cost is close to nothing, so that the server's share can be told apart from httpx's."""

    def __init__(self, port: int, token: str, concurrency: int) -> None:
        self.port, self.token = port, token
        self.free: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = (
            asyncio.Queue()
        )
        self.concurrency = concurrency

    async def __aenter__(self) -> RawClient:
        for _ in range(self.concurrency):
            self.free.put_nowait(await asyncio.open_connection("127.0.0.1", self.port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        while not self.free.empty():
            _, writer = self.free.get_nowait()
            writer.close()

    async def status_of(self, path: str) -> int:
        reader, writer = await self.free.get()
        try:
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {self.token}\r\n\r\n".encode()
            )
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
            return int(head.split(b" ", 2)[1])
        finally:
            self.free.put_nowait((reader, writer))


async def drive(
    client: httpx.AsyncClient | RawClient, path: str, n: int, concurrency: int
) -> tuple[float, float]:
    """n GETs of `path` by `concurrency` workers: requests per second, and this process's CPU
    time per request in µs. Every answer must be 200."""
    left = n
    bad: list[int] = []

    async def one() -> int:
        if isinstance(client, RawClient):
            return await client.status_of(path)
        return (await client.get(path)).status_code

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            code = await one()
            if code != 200:
                bad.append(code)

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    rate = n / (time.perf_counter() - t0)
    cpu_us = (time.process_time() - c0) / n * 1e6
    if bad:
        raise SystemExit(f"{path}: {len(bad)} answers were not 200: {sorted(set(bad))}")
    return rate, cpu_us


async def breakdown(engine: Engine, keys: KeyStore, token: str, n: int) -> list[Piece]:
    """The parts of /status one at a time, in this process, without HTTP: wall and CPU time
    per call (sequential, so wall includes waiting for PostgreSQL; CPU is this process's)."""
    actor = Actor(OPERATOR, Tier.BUILDER)
    tenant = actor.tenant
    reg = TaskRegistry(engine.db, tenant)
    summary = await engine.conductor.status(actor)

    async def empty_tx() -> None:
        async with engine.db.tx(tenant):
            pass

    async def serialise() -> None:
        summary.model_dump_json()  # what the route does: one pass straight to JSON

    pieces: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        ("verify_token (ES256, claims; key cached)", lambda: verify_token(keys, token)),
        ("empty tenant transaction", empty_tx),
        ("count_by_status (1 tenant tx)", reg.count_by_status),
        ("query newest 50 (1 tenant tx, parse)", lambda: reg.query(limit=50)),
        ("conductor.status (counts, queue, page: 1 tx)", lambda: engine.conductor.status(actor)),
        ("serialise the Summary (model_dump_json)", serialise),
    ]
    out = []
    for name, fn in pieces:
        for _ in range(50):
            await fn()
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            await fn()
        out.append(Piece(name, (time.perf_counter() - t0) / n * 1e6,
                         (time.process_time() - c0) / n * 1e6))  # fmt: skip
    return out


async def main(
    rounds: int, per_round: int, concurrency: int, tasks: int, client_kind: str, profile: bool
) -> int:
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-api-"))
    settings = Settings(
        data_dir=root / "data",
        worktree_dir=root / "worktrees",
        host_id="bench-host",
        key_encryption_key=base64.b64encode(os.urandom(32)).decode(),
    )
    cluster = cluster_for(settings)
    rates: dict[str, list[float]] = {STATUS: [], BARE: []}
    cpu: dict[str, list[float]] = {STATUS: [], BARE: []}  # this process's, µs per request
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
                async with contextlib.AsyncExitStack() as stack:
                    http = await stack.enter_async_context(
                        httpx.AsyncClient(
                            base_url=f"http://127.0.0.1:{port}",
                            headers={"Authorization": f"Bearer {token}"},
                            limits=limits,
                            timeout=30,
                        )
                    )
                    first = await http.get(STATUS)
                    assert len(first.json()["tasks"]) == tasks, first.text
                    bare_first = await http.get(BARE)
                    assert bare_first.json() == {"ok": True}
                    sizes = (len(first.content), len(bare_first.content))
                    assert (
                        await http.get(STATUS, headers={"Authorization": ""})
                    ).status_code == 401
                    client: httpx.AsyncClient | RawClient = http
                    if client_kind == "raw":
                        client = await stack.enter_async_context(
                            RawClient(port, token, concurrency)
                        )
                    for path in (STATUS, BARE):  # warm-up: connections, caches, statements
                        await drive(client, path, max(200, per_round // 10), concurrency)
                    for r in range(rounds):
                        order = [STATUS, BARE] if r % 2 == 0 else [BARE, STATUS]
                        for path in order:
                            rate, cpu_us = await drive(client, path, per_round, concurrency)
                            rates[path].append(rate)
                            cpu[path].append(cpu_us)
                        print(f"round {r + 1}: status {rates[STATUS][-1]:6.0f}/s  "
                              f"bare {rates[BARE][-1]:6.0f}/s  "
                              f"ratio {rates[STATUS][-1] / rates[BARE][-1]:.2f}")  # fmt: skip
                    pieces = await breakdown(engine, keys, token, per_round)
                    if profile:
                        prof = cProfile.Profile()
                        prof.enable()
                        await drive(client, STATUS, per_round, concurrency)
                        prof.disable()
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
    print(f"client={client_kind} rounds={rounds} per_round={per_round} "
          f"concurrency={concurrency} tasks={tasks}; response bodies: status {sizes[0]} bytes, "
          f"bare {sizes[1]} bytes")  # fmt: skip
    report(f"GET {STATUS} (JWT + RLS)", rates[STATUS], cpu[STATUS])
    report(f"GET {BARE}", rates[BARE], cpu[BARE])
    ratios = [s / b for s, b in zip(rates[STATUS], rates[BARE], strict=True)]
    med = statistics.median(ratios)
    print(f"ratio status / bare: median {med:.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})"
          f"  goal >= 0.5: {'met' if med >= 0.5 else 'MISSED'}")  # fmt: skip
    print(f"\nthe parts of /status alone, {per_round} calls each, sequential (us per call):")
    for piece in pieces:
        print(f"  {piece.name:42s} wall {piece.wall_us:7.0f}  cpu {piece.cpu_us:7.0f}")
    if prof_text:
        print(f"\ncProfile of one round of {per_round} GET {STATUS} (client and server):")
        print(prof_text)
    return 0


def report(name: str, rates: list[float], cpu_us: list[float]) -> None:
    print(f"{name:32s} median {statistics.median(rates):6.0f}/s  "
          f"{sorted(round(x) for x in rates)}  CPU of this process per request: "
          f"median {statistics.median(cpu_us):5.0f} us")  # fmt: skip


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--per-round", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--client", choices=["httpx", "raw"], default="httpx")
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    sys.exit(asyncio.run(main(args.rounds, args.per_round, args.concurrency, args.tasks,
                              args.client, args.profile)))  # fmt: skip
