"""Transitions per second through TaskRegistry ÷ the same conditional UPDATE sent directly
with asyncpg, in the same run, on the same database (a throwaway embedded cluster).

Everything runs as the engine's restricted role under RLS, one transition at a time,
cycling tasks spawning → running → failed → retrying → spawning. Two baselines:

- direct, in a tenant transaction: BEGIN + set_config (one simple query), the UPDATE, COMMIT,
  on a raw connection: what any correct caller must send under DESIGN §4 (3 round trips).
  registry ÷ this is the registry's own cost (pool, edge check, record parsing): goal >= 0.7.
- direct, autocommit: the tenant set once per session, then only the UPDATE (1 round trip).
  registry ÷ this adds the price of per-transaction tenant context (2 extra round trips).

    python benchmarks/bench_registry.py [--rounds 7] [--per-round 400]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import asyncpg

from fleet_core.config import Settings
from fleet_core.db.connect import cluster_for, open_database
from fleet_core.db.database import QueryClass, Tenant, init_connection, tenant_prelude
from fleet_core.lifecycle import SOURCES, TaskStatus
from fleet_core.models import AgentType, NewTask, TaskType
from fleet_core.registry import TaskRegistry

S = TaskStatus
CYCLE = [S.RUNNING, S.FAILED, S.RETRYING, S.SPAWNING]
TASKS = 16
RAW_SQL = (
    "UPDATE fleet_tasks SET status = $3, version = version + 1 "
    "WHERE id = $1 AND version = $2 AND status = ANY($4::text[]) RETURNING *"
)


async def main(rounds: int, per_round: int) -> None:
    data = Path(tempfile.mkdtemp(prefix="fleet-bench-"))
    settings = Settings(data_dir=data)
    cluster = cluster_for(settings)
    db = await open_database(settings)
    try:
        reg = TaskRegistry(db, Tenant.operator("bench"))
        tasks = []
        for i in range(TASKS):
            rec = await reg.create(
                NewTask(
                    agent_type=AgentType.DEMO,
                    model="demo",
                    task_type=TaskType.FEATURE,
                    description=f"bench {i}",
                    branch=f"fleet/bench-{i}",
                    repository="/r",
                )
            )
            rec = await reg.transition(rec.id, S.SPAWNING, expected_version=0)
            tasks.append(rec)
        state = {t.id: (t.version, 0) for t in tasks}  # id -> (version, position in CYCLE)
        ids = [t.id for t in tasks]

        raw = await asyncpg.connect(db.dsn)
        await init_connection(raw)
        await raw.execute("SELECT set_config('app.operator_id', 'bench', false)")

        async def via_registry(n: int) -> float:
            t0 = time.perf_counter()
            for i in range(n):
                tid = ids[i % TASKS]
                version, pos = state[tid]
                rec = await reg.transition(tid, CYCLE[pos], expected_version=version)
                state[tid] = (rec.version, (pos + 1) % len(CYCLE))
            return n / (time.perf_counter() - t0)

        prelude = tenant_prelude(reg.tenant, QueryClass.POINT)

        async def direct(n: int, in_tx: bool) -> float:
            t0 = time.perf_counter()
            for i in range(n):
                tid = ids[i % TASKS]
                version, pos = state[tid]
                to = CYCLE[pos]
                if in_tx:
                    await raw.execute(prelude)
                row = await raw.fetchrow(
                    RAW_SQL, tid, version, to.value, [s.value for s in SOURCES[to]]
                )
                if in_tx:
                    await raw.execute("COMMIT")
                assert row is not None
                state[tid] = (row["version"], (pos + 1) % len(CYCLE))
            return n / (time.perf_counter() - t0)

        await via_registry(50)  # warm up every path (prepared statements, caches)
        await direct(50, True)
        await direct(50, False)
        reg_rates, tx_rates, auto_rates = [], [], []
        for _ in range(rounds):  # interleaved, so drift hits every side alike
            tx_rates.append(await direct(per_round, True))
            auto_rates.append(await direct(per_round, False))
            reg_rates.append(await via_registry(per_round))
        await raw.close()
    finally:
        await db.close()
        cluster.destroy()
    print(f"rounds={rounds} per_round={per_round} tasks={TASKS}")
    report("direct UPDATE in a tenant transaction", tx_rates)
    report("direct UPDATE, autocommit", auto_rates)
    report("TaskRegistry.transition", reg_rates)
    for name, base in (("tenant transaction", tx_rates), ("autocommit", auto_rates)):
        ratios = [r / b for r, b in zip(reg_rates, base, strict=True)]
        print(
            f"ratio registry / direct {name}: median {statistics.median(ratios):.2f} "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
        )


def report(name: str, rates: list[float]) -> None:
    print(f"{name:40s} median {statistics.median(rates):6.0f}/s  {sorted(round(x) for x in rates)}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--per-round", type=int, default=400)
    args = ap.parse_args()
    asyncio.run(main(args.rounds, args.per_round))
