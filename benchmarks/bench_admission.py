"""The admission gate (Governor.admit): exact under contention, and its throughput across 50
operators ÷ plain INSERTs of the same rows, in the same run, on the same database (a throwaway
embedded cluster), as the engine's restricted role under RLS.

1. Contention: 200 concurrent `admit` calls for ONE operator (tier architect, limit 3, no
   global cap), gathered over the engine's pool (10 connections). Exactly 3 must be admitted
   and the rest refused with SpawnDeniedError, in every round; otherwise the script exits 1.
2. Throughput: 10 workers (= the pool size) admit tasks for 50 operators round-robin, with
   limits that never deny. Every phase starts from an empty task table (TRUNCATE, untimed).
   - gate: `Governor.admit`, no global cap: BEGIN + set_config, `fleet_admission_state`
     (the operator's advisory lock + counts), the INSERT, COMMIT (4 round trips), plus the
     Python around it (pool checkout, model dump, record parsing into a pydantic model).
   - gate + global cap: the same with `global_cap` set, so `fleet_admission_state` also takes
     the one global advisory lock and counts the fleet: all operators serialise on it.
   - INSERT in a tenant transaction: the registry's INSERT, sent through the engine's own
     pool in BEGIN + set_config (one simple query), INSERT, COMMIT: what any correct RLS-scoped
     write sends under DESIGN §4 (3 round trips). gate ÷ this is the price of the gate itself.
   - INSERT autocommit: the same INSERT alone (1 round trip) through a second pool of engine
     connections made the same way, whose tenant is set once per connection (session-level
     `app.is_admin`, since one connection serves all 50 operators). Unsafe in the product;
     the floor for one row.
   Phases are interleaved in every round (their order rotates); medians and min/max of the
   per-round ratios are printed.

    python benchmarks/bench_admission.py [--rounds 9] [--per-round 500]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg

from fleet_core.config import Settings
from fleet_core.db.bootstrap import DEFAULT_DATABASE
from fleet_core.db.connect import cluster_for, open_database
from fleet_core.db.database import (
    POOL_MAX,
    QueryClass,
    Tenant,
    init_connection,
    reset_connection,
    tenant_prelude,
)
from fleet_core.errors import SpawnDeniedError
from fleet_core.governor import DEFAULT_TIER_LIMITS, Admitted, Governor, Limits
from fleet_core.models import AgentType, NewTask, TaskType, Tier

CONTENDERS = 200
CONTENTION_ROUNDS = 5
CONTENTION_LIMIT = 3
OPERATORS = [f"op-{i:02d}" for i in range(50)]
CONCURRENCY = POOL_MAX
NEVER = 1_000_000  # a per-operator limit no round reaches
GLOBAL_CAP = 100_000

GATE = "gate"
CAPPED = "gate + global cap"
TX = "INSERT in a tenant transaction"
AUTO = "INSERT autocommit"
PHASES = [GATE, TX, CAPPED, AUTO]


def new_task(i: int) -> NewTask:
    return NewTask(
        agent_type=AgentType.DEMO,
        model="demo",
        task_type=TaskType.FEATURE,
        description=f"bench {i}",
        branch=f"fleet/bench-{i}",
        repository="/r",
    )


def insert_sql(task: NewTask) -> str:
    """The statement TaskRegistry.create sends."""
    cols = ["operator_id", *task.model_dump(mode="json")]
    params = ", ".join(f"${i}" for i in range(1, len(cols) + 1))
    return (
        f"INSERT INTO fleet_tasks ({', '.join(cols)}) VALUES ({params}) "
        "ON CONFLICT (operator_id, idempotency_key) DO NOTHING RETURNING *"
    )


async def drive(n: int, one: Callable[[int], Awaitable[None]]) -> float:
    """n calls of `one(i)` by CONCURRENCY workers; calls per second."""
    todo: Iterator[int] = iter(range(n))

    async def worker() -> None:
        for i in todo:  # shared: each index goes to whichever worker is free
            await one(i)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    return n / (time.perf_counter() - t0)


async def main(rounds: int, per_round: int) -> int:
    data = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    settings = Settings(data_dir=data)
    cluster = cluster_for(settings)
    db = await open_database(settings)
    failures = 0
    rates: dict[str, list[float]] = {p: [] for p in PHASES}
    try:
        su = await asyncpg.connect(cluster.info.dsn("postgres", DEFAULT_DATABASE))

        async def clear() -> None:
            await su.execute("TRUNCATE fleet_tasks CASCADE")

        # -- 1. correctness under contention -------------------------------------------------
        strict = Governor(db, Limits(global_cap=None))
        assert strict.limits.for_tier(Tier.ARCHITECT) == CONTENTION_LIMIT
        print(
            f"contention: {CONTENDERS} concurrent admits, one operator, architect limit "
            f"{CONTENTION_LIMIT}, pool {POOL_MAX}"
        )
        for r in range(CONTENTION_ROUNDS):
            await clear()
            results = await asyncio.gather(
                *(
                    strict.admit(new_task(i), operator_id="contender", tier=Tier.ARCHITECT)
                    for i in range(CONTENDERS)
                ),
                return_exceptions=True,
            )
            admitted = sum(isinstance(x, Admitted) for x in results)
            denied = sum(isinstance(x, SpawnDeniedError) for x in results)
            other = [x for x in results if not isinstance(x, Admitted | SpawnDeniedError)]
            rows = await su.fetchval(
                "SELECT count(*) FROM fleet_tasks WHERE operator_id = 'contender'"
            )
            ok = admitted == CONTENTION_LIMIT == rows and denied == CONTENDERS - admitted
            failures += not ok
            print(
                f"  round {r + 1}: admitted {admitted}, denied {denied}, other errors "
                f"{len(other)}, rows {rows}  {'ok' if ok else 'FAIL'}"
            )
            for x in other[:3]:
                print(f"    {x!r}")

        # -- 2. throughput across 50 operators -----------------------------------------------
        tiers = {**DEFAULT_TIER_LIMITS, Tier.SOVEREIGN: NEVER}
        gates = {
            GATE: Governor(db, Limits(tiers=tiers, global_cap=None)),
            CAPPED: Governor(db, Limits(tiers=tiers, global_cap=GLOBAL_CAP)),
        }
        sql = insert_sql(new_task(0))
        preludes = {op: tenant_prelude(Tenant.operator(op), QueryClass.POINT) for op in OPERATORS}

        async def init_admin_session(conn: asyncpg.Connection) -> None:
            await init_connection(conn)
            await conn.execute("SELECT set_config('app.is_admin', 'true', false)")

        auto_pool = await asyncpg.create_pool(
            db.dsn,
            min_size=CONCURRENCY,
            max_size=CONCURRENCY,
            init=init_admin_session,
            reset=reset_connection,
            server_settings={"application_name": "fleet-bench-autocommit"},
        )

        async def phase(name: str, n: int) -> float:
            await clear()
            tasks = [new_task(i) for i in range(n)]
            values: list[list[Any]] = [list(t.model_dump(mode="json").values()) for t in tasks]

            async def via_gate(i: int) -> None:
                res = await gates[name].admit(
                    tasks[i], operator_id=OPERATORS[i % len(OPERATORS)], tier=Tier.SOVEREIGN
                )
                assert isinstance(res, Admitted)

            async def in_tenant_tx(i: int) -> None:
                op = OPERATORS[i % len(OPERATORS)]
                async with db.pool.acquire() as conn:
                    await conn.execute(preludes[op])
                    row = await conn.fetchrow(sql, op, *values[i])
                    await conn.execute("COMMIT")
                assert row is not None

            async def autocommit(i: int) -> None:
                async with auto_pool.acquire() as conn:
                    row = await conn.fetchrow(sql, OPERATORS[i % len(OPERATORS)], *values[i])
                assert row is not None

            one = via_gate if name in gates else in_tenant_tx if name == TX else autocommit
            return await drive(n, one)

        try:
            for name in PHASES:  # warm up every path and every connection
                await phase(name, 100)
            for r in range(rounds):
                k = r % len(PHASES)
                for name in PHASES[k:] + PHASES[:k]:  # interleaved, order rotating
                    rates[name].append(await phase(name, per_round))
        finally:
            await auto_pool.close()
            await su.close()
    finally:
        await db.close()
        cluster.destroy()
        shutil.rmtree(data, ignore_errors=True)

    print(
        f"\nthroughput: rounds={rounds} per_round={per_round} operators={len(OPERATORS)} "
        f"concurrency={CONCURRENCY}"
    )
    print(f"{'':52s} {'median':>8s} {'min':>6s} {'max':>6s}  (per second)")
    for name in PHASES:
        xs = rates[name]
        print(f"{name:52s} {statistics.median(xs):8.0f} {min(xs):6.0f} {max(xs):6.0f}")
    print(f"\n{'ratio (per round)':52s} {'median':>8s} {'min':>6s} {'max':>6s}")
    for num in (GATE, CAPPED):
        for base in (TX, AUTO):
            ratios = [a / b for a, b in zip(rates[num], rates[base], strict=True)]
            label = f"{num} / {base}"
            print(
                f"{label:52s} {statistics.median(ratios):8.2f} {min(ratios):6.2f} "
                f"{max(ratios):6.2f}"
            )
    ok = failures == 0
    print(f"\ncontention: {'every round admitted exactly' if ok else 'FAILED: not always'} 3")
    return 0 if ok else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--per-round", type=int, default=500)
    args = ap.parse_args()
    sys.exit(asyncio.run(main(args.rounds, args.per_round)))
