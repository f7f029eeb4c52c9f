"""The console with 2,000 tasks against 20: time to show 200 status changes, and memory.

Goal: time(2000) ÷ time(20) <= 2 for 200 status changes, and RSS <= 150 MB with 2,000 tasks.

Real PostgreSQL (a throwaway embedded cluster) and the real console: `FleetApp` headless under
Textual's pilot (`run_test(size=(160, 48))`), its engine started as in the tests
(`running_engine(..., background=False)`: database and verbs, no monitor, no agents). For each
N, N tasks are inserted as rows through the superuser DSN (status `running`, the app's
operator, created_at one second apart from a fixed date), a fresh app is started and the
benchmark waits until its table shows them. Blocks (fresh rows, fresh app) are interleaved
over --rounds rounds, the order of N alternating. Per block:

- end to end, same workload at both N: 200 status changes through the engine
  (`conductor.moves.move`, which writes the row and publishes `status_changed` on the bus),
  one after another, round-robin over the 20 newest tasks (10 changes each, the cycle
  running → failed → retrying → spawning → running), the other N - 20 rows idle. Timed from
  the first change until the table's records hold every task's final version: the writes,
  the bridge's 0.25 s coalescing, the screen re-reading the changed tasks and updating their
  rows (database → event → bridge → screen → table). "writes" is the 200 moves alone.
- end to end, 200 distinct tasks (N >= 200 only): one change each, for 200 tasks shown in
  the table other than those 20.
- the table alone: 200 `table.upsert([rec])` calls of changed records (status moved one step
  on, version + 1; built beforehand) inside `app.batch_update()`, same round-robin over the
  20 newest tasks, and at N >= 200 over 200 distinct tasks; "+ repaint" adds the screen
  update that follows (`screen._on_timer_update()`, what the pilot calls to repaint).
- if the table shows fewer rows than N (the console loads at most the newest 1,000 tasks),
  the table alone again after `table.sync` of all N records, so the table really has N rows.

Then RSS, each in a fresh process running the app on the same cluster (so earlier rounds do
not inflate it): VmRSS and VmHWM from /proc/self/status once the table is loaded and the app
has run 6 s more (a reload and the overview included), with 20 and 2,000 tasks in the
database, and with 2,000 after `table.sync` of all 2,000 records.

    python benchmarks/bench_console.py [--rounds 5] [--reps 2] [--profile]

--profile: afterwards, one more N=2000 block with cProfile over the end-to-end changes.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

from fleet_console.app import FleetApp
from fleet_console.widgets.task_table import TaskTable
from fleet_core.config import Settings
from fleet_core.db.bootstrap import DEFAULT_DATABASE
from fleet_core.db.connect import cluster_for, open_database
from fleet_core.db.database import init_connection
from fleet_core.engine import running_engine
from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord

S = TaskStatus
SIZES = (20, 2000)
CHANGES = 200
HOT = 20  # tasks changed round-robin in the same-workload measurements
SIZE = (160, 48)
OPERATOR = "bench"
NEXT = {S.RUNNING: S.FAILED, S.FAILED: S.RETRYING, S.RETRYING: S.SPAWNING, S.SPAWNING: S.RUNNING}
BASE = datetime(2026, 1, 1, tzinfo=UTC)
INSERT = (
    "INSERT INTO fleet_tasks (id, operator_id, agent_type, model, task_type, description,"
    " branch, repository, status, host_id, spawned_at, created_at, updated_at)"
    " VALUES ($1, $2, 'demo', 'demo', 'feature', $3, $4, '/r', 'running', 'bench-host', $5,"
    " $5, $5)"
)
RSS_WAIT_S = 6.0


def settings_for(data_dir: Path) -> Settings:
    return Settings(data_dir=data_dir, operator=OPERATOR, host_id="bench-host")


def new_app(settings: Settings) -> FleetApp:
    return FleetApp(
        settings, engine=lambda bus: running_engine(settings, bus=bus, background=False)
    )


async def insert(su: asyncpg.Connection, n: int) -> list[str]:
    """n running tasks; their ids newest first (the table's default order)."""
    await su.execute("TRUNCATE fleet_tasks CASCADE")
    rows = [
        (uuid.uuid4(), OPERATOR, f"bench {i}", f"fleet/bench-{i}", BASE + timedelta(seconds=i))
        for i in range(n)
    ]
    await su.executemany(INSERT, rows)
    return [str(r[0]) for r in reversed(rows)]


async def connect(dsn: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(dsn)
    await init_connection(conn)  # the engine's codecs (JSONB as Python objects)
    return conn


async def all_records(su: asyncpg.Connection) -> list[TaskRecord]:
    rows = await su.fetch("SELECT * FROM fleet_tasks")
    return [TaskRecord.model_validate(dict(r)) for r in rows]


async def until(check: Callable[[], bool], limit: float = 60.0, step: float = 0.002) -> None:
    deadline = time.perf_counter() + limit
    while not check():
        if time.perf_counter() > deadline:
            raise AssertionError("the console did not get there in time")
        await asyncio.sleep(step)


async def loaded(app: FleetApp, n: int) -> TaskTable:
    await until(lambda: app.source is not None and hasattr(app, "fleet_screen"), step=0.02)
    table = app.fleet_screen.table
    await until(lambda: len(table.records) >= min(n, 1000) and table.row_count > 0, step=0.02)
    await asyncio.sleep(0.3)  # the overview and the first repaints settle
    return table


async def end_to_end(app: FleetApp, table: TaskTable, order: list[str]) -> tuple[float, float]:
    """Seconds from the first change until the table shows the last; seconds of writes."""
    assert app.source is not None
    moves = app.source.conductor.moves
    recs = {k: table.records[k] for k in order}
    t0 = time.perf_counter()
    for k in order:
        rec = recs[k]
        recs[k] = await moves.move(rec, NEXT[rec.status], reason="bench")
    writes = time.perf_counter() - t0
    want = {k: r.version for k, r in recs.items()}
    await until(lambda: all(table.records[k].version == v for k, v in want.items()))
    return time.perf_counter() - t0, writes


def table_alone(app: FleetApp, table: TaskTable, order: list[str]) -> tuple[float, float]:
    """Seconds for 200 upserts in one batch, and with the repaint that follows."""
    recs = {k: table.records[k] for k in order}
    changed = []
    for k in order:
        rec = recs[k]
        rec = rec.model_copy(update={"status": NEXT[rec.status], "version": rec.version + 1})
        recs[k] = rec
        changed.append(rec)
    before = table.updates
    t0 = time.perf_counter()
    with app.batch_update():
        for rec in changed:
            table.upsert([rec])
    t1 = time.perf_counter()
    app.screen._on_timer_update()  # the repaint (what Pilot.pause triggers)
    t2 = time.perf_counter()
    assert table.updates > before
    return t1 - t0, t2 - t0


def round_robin(keys: list[str]) -> list[str]:
    return [keys[i % len(keys)] for i in range(CHANGES)]


async def block(
    settings: Settings, su: asyncpg.Connection, n: int, reps: int, prof: cProfile.Profile | None
) -> dict[str, list[float]]:
    ids = await insert(su, n)
    app = new_app(settings)
    out: dict[str, list[float]] = defaultdict(list)
    async with app.run_test(size=SIZE):
        table = await loaded(app, n)
        shown = [k for k in ids if k in table.records]
        out["shown"].append(len(shown))
        same = round_robin(shown[:HOT])
        distinct = shown[HOT : HOT + CHANGES] if len(shown) >= HOT + CHANGES else []
        if prof is not None:
            prof.enable()
        for _ in range(reps):
            total, writes = await end_to_end(app, table, same)
            out["e2e_same"].append(total)
            out["writes_same"].append(writes)
            if distinct:
                total, writes = await end_to_end(app, table, distinct)
                out["e2e_distinct"].append(total)
                out["writes_distinct"].append(writes)
        if prof is not None:
            prof.disable()
            return out
        for _ in range(reps * 2):  # after the end-to-end runs: these records are not in the db
            up, paint = table_alone(app, table, same)
            out["table_same"].append(up)
            out["paint_same"].append(paint)
            if distinct:
                up, paint = table_alone(app, table, distinct)
                out["table_distinct"].append(up)
                out["paint_distinct"].append(paint)
        if len(shown) < n:  # the table as N rows, loaded by hand
            every = await all_records(su)
            for _ in range(reps * 2):
                if table.row_count != n:  # (again, if the screen's 5 s reload cut it back)
                    with app.batch_update():
                        table.sync(every)
                    app.screen._on_timer_update()
                assert table.row_count == n
                up, paint = table_alone(app, table, same)
                out["full_same"].append(up)
                out["full_paint_same"].append(paint)
                up, paint = table_alone(app, table, ids[:: n // CHANGES][:CHANGES])
                out["full_distinct"].append(up)
                out["full_paint_distinct"].append(paint)
                await asyncio.sleep(0)
    return out


# -- RSS, in a fresh process ------------------------------------------------------------------


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


async def rss_child(data_dir: Path, su_dsn: str, n: int, full: bool) -> None:
    settings = settings_for(data_dir)
    app = new_app(settings)
    async with app.run_test(size=SIZE):
        table = await loaded(app, n)
        if full:
            su = await connect(su_dsn)
            every = await all_records(su)
            await su.close()
            with app.batch_update():
                table.sync(every)
            del every
        await asyncio.sleep(RSS_WAIT_S)
        if full and table.row_count != n:  # the reload cut it back: load it again
            su = await connect(su_dsn)
            every = await all_records(su)
            await su.close()
            with app.batch_update():
                table.sync(every)
            del every
            await asyncio.sleep(0.5)
        result = {"rows": table.row_count, "records": len(table.records)}
        result |= {"rss_kb": status_kb("VmRSS"), "hwm_kb": status_kb("VmHWM")}
    print(json.dumps(result))


def rss_in_child(data_dir: Path, su_dsn: str, n: int, full: bool) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--rss-child", str(data_dir), su_dsn, str(n)]
    cmd += ["--full"] if full else []
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"rss child failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- main -------------------------------------------------------------------------------------


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:8.1f} ms (min {min(values) * 1000:.1f}, " + (
        f"max {max(values) * 1000:.1f})"
    )


def ratio(a: list[float], b: list[float]) -> str:
    """Per-round ratios of the round medians."""
    r = [x / y for x, y in zip(a, b, strict=True)]
    return f"{statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f})"


async def main(rounds: int, reps: int, profile: bool) -> int:
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-console-"))
    settings = settings_for(root / "data")
    cluster = cluster_for(settings)
    db = await open_database(settings)  # starts, bootstraps and migrates the cluster
    await db.close()
    runs: dict[int, list[dict[str, list[float]]]] = {n: [] for n in SIZES}
    rss: list[tuple[str, dict[str, Any]]] = []
    prof_text = ""
    t_start = time.perf_counter()
    try:
        su_dsn = cluster.info.dsn("postgres", DEFAULT_DATABASE)
        su = await connect(su_dsn)
        try:
            for r in range(rounds):
                for n in SIZES if r % 2 == 0 else SIZES[::-1]:  # interleaved, order alternating
                    got = await block(settings, su, n, reps, None)
                    runs[n].append(got)
                    line = f"round {r + 1} n={n:4d} (rows shown {int(got['shown'][0])}):"
                    for key in ("e2e_same", "e2e_distinct", "table_same", "full_same"):
                        if got.get(key):
                            line += f" {key} {statistics.median(got[key]) * 1000:.1f} ms"
                    print(line, flush=True)
            for label, n, full in (
                ("20 tasks", 20, False),
                ("2,000 tasks (table as loaded)", 2000, False),
                ("2,000 tasks, all 2,000 rows in the table", 2000, True),
            ):
                await insert(su, n)
                rss.append((label, await asyncio.to_thread(rss_in_child, root / "data", su_dsn, n,
                                                           full)))  # fmt: skip
                print(f"rss {label}: {rss[-1][1]}", flush=True)
            if profile:
                prof = cProfile.Profile()
                await block(settings, su, 2000, reps, prof)
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(25)
                prof_text = buf.getvalue()
        finally:
            await su.close()
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - t_start

    print(f"\nrounds={rounds} reps={reps} changes={CHANGES}, {elapsed:.0f} s in all")

    def med(n: int, key: str) -> list[float]:
        return [statistics.median(b[key]) for b in runs[n] if b.get(key)]

    def flat(n: int, key: str) -> list[float]:
        return [x for b in runs[n] for x in b.get(key, [])]

    small, big = SIZES
    print(f"rows shown in the table: N={small}: {med(small, 'shown')[0]:.0f}, "
          f"N={big}: {med(big, 'shown')[0]:.0f}")  # fmt: skip
    rows = [
        ("end to end, 20 tasks x 10 changes", "e2e_same"),
        ("  of which the 200 writes", "writes_same"),
        ("end to end, 200 distinct tasks", "e2e_distinct"),
        ("  of which the 200 writes", "writes_distinct"),
        ("table alone, 20 tasks x 10", "table_same"),
        ("  + repaint", "paint_same"),
        ("table alone, 200 distinct", "table_distinct"),
        ("  + repaint", "paint_distinct"),
        (f"table alone at {big} rows, 20 x 10", "full_same"),
        ("  + repaint", "full_paint_same"),
        (f"table alone at {big} rows, 200 distinct", "full_distinct"),
        ("  + repaint", "full_paint_distinct"),
    ]
    for label, key in rows:
        for n in SIZES:
            if flat(n, key):
                print(f"{label:42s} N={n:4d}: {ms(flat(n, key))}")
    print(f"\nratios time({big}) / time({small}), per round (medians of the round's reps):")
    pairs = [
        ("end to end, 20 x 10 (goal <= 2)", "e2e_same", "e2e_same"),
        ("end to end, 200 distinct at 2000 / 20 x 10 at 20", "e2e_distinct", "e2e_same"),
        ("table alone, 20 x 10", "table_same", "table_same"),
        ("table alone + repaint, 20 x 10", "paint_same", "paint_same"),
        ("table alone, 200 distinct / 20 x 10", "table_distinct", "table_same"),
        (f"table alone at {big} rows, 20 x 10", "full_same", "table_same"),
        (f"  + repaint at {big} rows", "full_paint_same", "paint_same"),
        (f"table alone at {big} rows, 200 distinct / 20 x 10", "full_distinct", "table_same"),
    ]
    for label, key_big, key_small in pairs:
        if med(big, key_big) and med(small, key_small):
            print(f"  {label:52s} {ratio(med(big, key_big), med(small, key_small))}")
    print("\nRSS (fresh process each):")
    for label, got in rss:
        print(f"  {label:42s} VmRSS {got['rss_kb'] / 1024:6.1f} MB, VmHWM "
              f"{got['hwm_kb'] / 1024:6.1f} MB, rows {got['rows']}, records {got['records']}")  # fmt: skip
    if prof_text:
        print("\n" + prof_text)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--rss-child", nargs=3, metavar=("DATA_DIR", "SU_DSN", "N"),
                    help=argparse.SUPPRESS)  # fmt: skip
    ap.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        data_dir, dsn, count = args.rss_child
        asyncio.run(rss_child(Path(data_dir), dsn, int(count), args.full))
    else:
        sys.exit(asyncio.run(main(args.rounds, args.reps, args.profile)))
