"""Cold start of the command line: `fleet status --json` ÷ `python -c "import asyncpg"`, wall
time of whole processes, in the same run (goal <= 3).

A throwaway data dir with its embedded PostgreSQL cluster (started and migrated once, before
the timing, as any earlier fleet command leaves it) and `--tasks` tasks (default 20) of the
operator `bench`, so `status --json` prints real rows. Each command runs as a fresh process
(`subprocess.run`, output captured) like hyperfine does: `--rounds` rounds (default 21), the
commands interleaved in an order that rotates each round, after `--warmup` unrecorded rounds
(default 3) that fill the OS page cache. Reported: the median, min and max wall time of each
command, and the median of the per-round ratios against the baseline measured in that round.

    python benchmarks/bench_cli_start.py [--rounds 21] [--warmup 3] [--tasks 20]

The fleet commands run through the `fleet` console script installed next to this Python (as a
user runs it), else `python -m fleet_core`. Also timed, for context: `python -c pass` (the
interpreter alone), `fleet --help` (the parser: no verb module), `fleet show ID --json`, and
`fleet spawn --type poetry x` (a usage error: the verb's module, no database).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from fleet_core.config import Settings
from fleet_core.db.connect import cluster_for, open_database
from fleet_core.db.database import Tenant
from fleet_core.models import AgentType, NewTask, TaskType
from fleet_core.registry import TaskRegistry

OPERATOR = "bench"
BASELINE = "import asyncpg"
STATUS = "fleet status --json"


def fleet_argv() -> list[str]:
    script = Path(sys.executable).with_name("fleet")
    return [str(script)] if script.exists() else [sys.executable, "-m", "fleet_core"]


async def seed(settings: Settings, tasks: int) -> tuple[str, str]:
    db = await open_database(settings)  # starts the cluster and migrates, once, untimed
    try:
        reg = TaskRegistry(db, Tenant.operator(OPERATOR))
        first = None
        for i in range(tasks):
            rec = await reg.create(
                NewTask(
                    agent_type=AgentType.DEMO,
                    model="demo",
                    task_type=TaskType.DOCS,
                    description=f"bench task {i}: write the install guide",
                    branch=f"fleet/bench-{i}",
                    repository="/srv/bench",
                )
            )
            first = first or str(rec.id)
        async with db.pool.acquire() as conn:
            pg_version = str(await conn.fetchval("SHOW server_version"))
    finally:
        await db.close()
    return first or "", pg_version


def timed(argv: list[str], env: dict[str, str], expect: int) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - t0
    if done.returncode != expect:
        sys.exit(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return elapsed


def main(rounds: int, warmup: int, tasks: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-cli-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEET_")}
    env.update(FLEET_DATA_DIR=str(root / "data"), FLEET_CONFIG=str(root / "absent.toml"),
               FLEET_OPERATOR=OPERATOR)  # fmt: skip
    os.environ.update(env)
    settings = Settings(data_dir=root / "data")
    cluster = cluster_for(settings)
    try:
        task_id, pg_version = asyncio.run(seed(settings, tasks))
        fleet = fleet_argv()
        commands: dict[str, tuple[list[str], int]] = {
            BASELINE: ([sys.executable, "-c", "import asyncpg"], 0),
            STATUS: ([*fleet, "status", "--json"], 0),
            "python -c pass": ([sys.executable, "-c", "pass"], 0),
            "fleet --help": ([*fleet, "--help"], 0),
            "fleet show ID --json": ([*fleet, "show", task_id[:8], "--json"], 0),
            "fleet spawn --type poetry x": ([*fleet, "spawn", "--type", "poetry", "x"], 2),
        }
        names = list(commands)
        times: dict[str, list[float]] = {name: [] for name in names}
        for r in range(warmup + rounds):
            order = names[r % len(names) :] + names[: r % len(names)]
            for name in order:
                argv, expect = commands[name]
                elapsed = timed(argv, env, expect)
                if r >= warmup:
                    times[name].append(elapsed)
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)
    base = times[BASELINE]
    print(f"rounds={rounds} warmup={warmup} tasks={tasks}  ({' '.join(fleet)})")
    for name in names:
        ts = times[name]
        ratios = [t / b for t, b in zip(ts, base, strict=True)]
        print(
            f"{name:30s} median {statistics.median(ts) * 1000:6.1f} ms "
            f"(min {min(ts) * 1000:6.1f}, max {max(ts) * 1000:6.1f})  "
            f"÷ baseline: median {statistics.median(ratios):.2f} "
            f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
        )
    versions = ", ".join(f"{p} {version(p)}" for p in ("asyncpg", "pydantic"))
    print(f"\nPython {platform.python_version()}, PostgreSQL {pg_version}, {versions}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=20)
    args = ap.parse_args()
    main(args.rounds, args.warmup, args.tasks)
