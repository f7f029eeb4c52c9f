"""The console with 2,000 tasks against 20: time to show 200 status changes, and memory.

Goal: time(2000) ÷ time(20) <= 2 for 200 status changes, and RSS <= 150 MB with 2,000 tasks.

Real PostgreSQL (a throwaway embedded cluster) and the real console: `FleetApp` headless under
Textual's pilot (`run_test(size=(160, 48))`), its engine started as in the tests
(`running_engine(..., background=False)`: database and verbs, no monitor, no agents). For each
N (default 20, 100 and 2,000; at 100 the table already fills the 48-line window, about 45
rows, as at 2,000), N tasks are inserted as rows through the superuser DSN (status `running`,
the app's operator, created_at one second apart from a fixed date), a fresh app is started
and the benchmark waits until its table has loaded them (at most the newest 1,000: the
console loads no more). Blocks (fresh rows, fresh app) are interleaved over --rounds rounds,
the order of N rotating. Per block, --reps times:

- end to end, same workload at every N: 200 status changes through the engine
  (`conductor.moves.move`, which writes the row and publishes `status_changed` on the bus),
  one after another, round-robin over the 20 newest tasks (10 changes each, the cycle
  running → failed → retrying → spawning → running), the other N - 20 rows idle. Timed from
  the first change until the table's records hold every task's final version (polled every
  2 ms): the writes, the bridge's 0.25 s coalescing, the screen re-reading the changed tasks
  and updating their rows (database → event → bridge → screen → table). "the 200 writes" is
  the moves alone; "after the last write" is the rest (0 to 0.25 s of it is the flush
  timer); "CPU" is this process's CPU time over the whole (the app and the writes share one
  event loop); "in screen updates" is the part of it spent in the screen's layout and
  render (`_refresh_layout` and `_compositor_refresh`, wrapped with a timer on the instance).
- end to end, 200 distinct tasks (N >= 220 only): one change each, for 200 tasks shown in
  the table other than those 20.

Each end-to-end run starts after 0.3 s of quiet (and no batch open), so that one run's
last repaints do not land in the next. One untimed block at the largest N comes first
(warm-up: the cluster's caches, Textual's and Rich's).

Then --reps x 2 times, the table alone: 200 `table.upsert([rec])` calls of changed records
(status one step on, version + 1; built beforehand) inside `app.batch_update()`, the same
round-robin over the 20 newest tasks and, at N >= 220, over 200 distinct tasks; "+ repaint"
adds the table's repaint right after (the table marked dirty on the screen, as its Update
message does, and `screen._on_timer_update()`: the compositor's render and the frame to the
headless driver). If the table shows fewer rows than N, the same again after `table.sync` of
all N records (read through the superuser DSN), so that the table really has N rows.

Then RSS, each in a fresh process running the app on the same cluster (so the rounds do not
inflate it): VmRSS and VmHWM from /proc/self/status after the table has loaded and the app
has run 6 s more (a reload, overviews), for the smallest and the largest N, and for the
largest after `table.sync` of all its records.

    python benchmarks/bench_console.py [--sizes 20,100,2000] [--rounds 6] [--reps 3] [--profile]

--profile: afterwards, one more block at the largest N with cProfile over its end-to-end
changes (the whole event loop: the app's handlers, its repaints and the writes).
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
SETTLE_S = 0.3  # before each end-to-end run: a bridge flush, nothing pending


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


class ScreenUpdates:
    """Counts the screen's updates (layout and/or compositor render, written to the headless
    driver) and the seconds spent in them, by wrapping the two methods on the instance."""

    def __init__(self, app: FleetApp) -> None:
        self.count = 0
        self.seconds = 0.0
        self._depth = 0
        screen: Any = app.fleet_screen
        for name in ("_refresh_layout", "_compositor_refresh"):
            setattr(screen, name, self._timed(getattr(screen, name)))

    def _timed(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kw: Any) -> Any:
            self._depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                self._depth -= 1
                if not self._depth:  # the layout calls the render: count the outer call once
                    self.seconds += time.perf_counter() - t0
                    self.count += 1

        return wrapper


async def end_to_end(
    app: FleetApp, table: TaskTable, updates: ScreenUpdates, order: list[str]
) -> dict[str, float]:
    """From the first change until the table's records show the last: seconds in all, of the
    writes, after the last write; CPU seconds of this process; screen updates meanwhile."""
    assert app.source is not None
    await asyncio.sleep(SETTLE_S)  # the previous run's last repaints and handlers are done
    await until(lambda: not app._batch_count)
    moves = app.source.conductor.moves
    recs = {k: table.records[k] for k in order}
    n0, s0 = updates.count, updates.seconds
    c0 = time.process_time()
    t0 = time.perf_counter()
    for k in order:
        rec = recs[k]
        recs[k] = await moves.move(rec, NEXT[rec.status], reason="bench")
    writes = time.perf_counter() - t0
    want = {k: r.version for k, r in recs.items()}
    await until(lambda: all(table.records[k].version == v for k, v in want.items()))
    total = time.perf_counter() - t0
    return {
        "e2e": total,
        "writes": writes,
        "lag": total - writes,
        "cpu": time.process_time() - c0,
        "screens": float(updates.count - n0),
        "screen_s": updates.seconds - s0,
    }


def repaint(app: FleetApp, table: TaskTable) -> None:
    """The table's repaint, now: what the screen does on the table's Update message and its
    next update tick (`screen._on_timer_update`, also what the pilot calls)."""
    app.screen._dirty_widgets.add(table)
    app.screen._on_timer_update()


async def table_alone(
    app: FleetApp, table: TaskTable, order: list[str], refill: list[TaskRecord] | None = None
) -> tuple[float, float]:
    """Seconds for 200 upserts in one batch, and with the repaint that follows. `refill`:
    first `table.sync` these records if the screen's 5 s reload has cut the table back."""
    # Not while a batch is open (the governor panel recomposes inside one every 2 s): the
    # screen would skip the repaint.
    await until(lambda: not app._batch_count)
    if refill is not None and table.row_count != len(refill):
        with app.batch_update():
            table.sync(refill)
        repaint(app, table)
        assert table.row_count == len(refill)
    recs = {k: table.records[k] for k in order}
    changed = []
    for k in order:
        rec = recs[k]
        rec = rec.model_copy(update={"status": NEXT[rec.status], "version": rec.version + 1})
        recs[k] = rec
        changed.append(rec)
    repaint(app, table)  # nothing else pending
    before = table.updates
    t0 = time.perf_counter()
    with app.batch_update():
        for rec in changed:
            table.upsert([rec])
    t1 = time.perf_counter()
    repaint(app, table)
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
        updates = ScreenUpdates(app)
        shown = [k for k in ids if k in table.records]
        out["shown"].append(len(shown))
        same = round_robin(shown[:HOT])
        distinct = shown[HOT : HOT + CHANGES] if len(shown) >= HOT + CHANGES else []
        if prof is not None:
            prof.enable()
        for _ in range(reps):
            for kind, order in (("same", same), ("distinct", distinct)):
                if order:
                    for key, value in (await end_to_end(app, table, updates, order)).items():
                        out[f"{key}_{kind}"].append(value)
        if prof is not None:
            prof.disable()
            return out
        for _ in range(reps * 2):  # after the end-to-end runs: these records are not in the db
            for kind, order in (("same", same), ("distinct", distinct)):
                if order:
                    up, paint = await table_alone(app, table, order)
                    out[f"table_{kind}"].append(up)
                    out[f"paint_{kind}"].append(paint)
        if len(shown) < n:  # the table with all N rows, loaded by hand
            every = await all_records(su)
            spread = ids[:: n // CHANGES][:CHANGES]
            for _ in range(reps * 2):
                for kind, order in (("same", same), ("distinct", spread)):
                    up, paint = await table_alone(app, table, order, refill=every)
                    out[f"full_table_{kind}"].append(up)
                    out[f"full_paint_{kind}"].append(paint)
    return out


# -- RSS, in a fresh process ------------------------------------------------------------------


def status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


async def rss_child(data_dir: Path, su_dsn: str, n: int, full: bool) -> None:
    app = new_app(settings_for(data_dir))
    async with app.run_test(size=SIZE):
        table = await loaded(app, n)
        await asyncio.sleep(RSS_WAIT_S)  # reloads, overviews, ages: the steady state
        if full:
            su = await connect(su_dsn)
            every = await all_records(su)
            await su.close()
            while table.row_count != n:  # again if the screen's 5 s reload cut it back
                with app.batch_update():
                    table.sync(every)
                await asyncio.sleep(0.5)  # repainted
            del every
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
    lo, hi = min(values) * 1000, max(values) * 1000
    return f"{statistics.median(values) * 1000:7.1f} (min {lo:.1f}, max {hi:.1f})"


def ratio(a: list[float], b: list[float]) -> str:
    """Median, min and max of the per-round ratios of the round medians."""
    r = [x / y for x, y in zip(a, b, strict=True) if y]
    return f"{statistics.median(r):.2f} (min {min(r):.2f}, max {max(r):.2f})"


ROWS = [  # label, key: what is printed per N
    ("end to end, 20 tasks x 10 changes, ms", "e2e_same"),
    ("  the 200 writes", "writes_same"),
    ("  after the last write", "lag_same"),
    ("  CPU time of this process", "cpu_same"),
    ("  in screen updates", "screen_s_same"),
    ("end to end, 200 distinct tasks, ms", "e2e_distinct"),
    ("  the 200 writes", "writes_distinct"),
    ("  after the last write", "lag_distinct"),
    ("  CPU time of this process", "cpu_distinct"),
    ("  in screen updates", "screen_s_distinct"),
    ("table alone, 20 x 10, ms", "table_same"),
    ("  + repaint", "paint_same"),
    ("table alone, 200 distinct", "table_distinct"),
    ("  + repaint", "paint_distinct"),
    ("table alone with all N rows, 20 x 10", "full_table_same"),
    ("  + repaint", "full_paint_same"),
    ("table alone with all N rows, 200 distinct", "full_table_distinct"),
    ("  + repaint", "full_paint_distinct"),
]
RATIOS = [  # label, key at the larger N, key at the smaller N
    ("end to end, 20 x 10", "e2e_same", "e2e_same"),
    ("  the 200 writes", "writes_same", "writes_same"),
    ("  after the last write", "lag_same", "lag_same"),
    ("  CPU time of this process", "cpu_same", "cpu_same"),
    ("end to end, 200 distinct ÷ 20 x 10", "e2e_distinct", "e2e_same"),
    ("table alone, 20 x 10", "table_same", "table_same"),
    ("  + repaint", "paint_same", "paint_same"),
    ("table alone, 200 distinct ÷ 20 x 10", "table_distinct", "table_same"),
    ("table alone with all N rows, 20 x 10", "full_table_same", "table_same"),
    ("  + repaint", "full_paint_same", "paint_same"),
    ("table alone with all N rows, 200 distinct ÷ 20 x 10", "full_table_distinct", "table_same"),
]


async def main(sizes: list[int], rounds: int, reps: int, profile: bool) -> int:
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-console-"))
    settings = settings_for(root / "data")
    cluster = cluster_for(settings)
    db = await open_database(settings)  # starts, bootstraps and migrates the cluster
    await db.close()
    runs: dict[int, list[dict[str, list[float]]]] = {n: [] for n in sizes}
    rss: list[tuple[str, dict[str, Any]]] = []
    prof_text = ""
    t_start = time.perf_counter()
    try:
        su_dsn = cluster.info.dsn("postgres", DEFAULT_DATABASE)
        su = await connect(su_dsn)
        try:
            await block(settings, su, sizes[-1], 1, None)  # warm-up, not counted
            for r in range(rounds):
                k = r % len(sizes)
                for n in sizes[k:] + sizes[:k]:  # interleaved, the order rotating
                    got = await block(settings, su, n, reps, None)
                    runs[n].append(got)
                    line = f"round {r + 1} n={n:4d} (rows shown {int(got['shown'][0]):4d}):"
                    for key in ("e2e_same", "e2e_distinct", "table_same", "paint_same"):
                        if got.get(key):
                            line += f" {key} {statistics.median(got[key]) * 1000:.1f} ms"
                    print(line, flush=True)
            small, big = sizes[0], sizes[-1]
            for label, n, full in (
                (f"{small} tasks", small, False),
                (f"{big} tasks, the table as loaded", big, False),
                (f"{big} tasks, all {big} rows in the table", big, True),
            ):
                await insert(su, n)
                got = await asyncio.to_thread(rss_in_child, root / "data", su_dsn, n, full)
                rss.append((label, got))
                print(f"rss {label}: {got}", flush=True)
            if profile:
                prof = cProfile.Profile()
                await block(settings, su, big, reps, prof)
                buf = io.StringIO()
                stats = pstats.Stats(prof, stream=buf)
                stats.sort_stats("cumulative").print_stats(30)
                stats.sort_stats("tottime").print_stats(15)
                prof_text = buf.getvalue()
        finally:
            await su.close()
    finally:
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - t_start

    def med(n: int, key: str) -> list[float]:
        return [statistics.median(b[key]) for b in runs[n] if b.get(key)]

    def flat(n: int, key: str) -> list[float]:
        return [x for b in runs[n] for x in b.get(key, [])]

    print(f"\nrounds={rounds} reps={reps} changes={CHANGES} sizes={sizes}, {elapsed:.0f} s in all")
    print("rows shown: " + ", ".join(f"N={n}: {med(n, 'shown')[0]:.0f}" for n in sizes))
    print(f"{'':44s}" + "".join(f"{'N=' + str(n):>30s}" for n in sizes))
    for label, key in ROWS:
        if any(flat(n, key) for n in sizes):
            cells = [ms(flat(n, key)) if flat(n, key) else "-" for n in sizes]
            print(f"{label:44s}" + "".join(f"{c:>30s}" for c in cells))
    screens = [f"N={n}: {statistics.median(flat(n, 'screens_same')):.0f}" for n in sizes]
    print("screen updates during an end-to-end 20 x 10 (median): " + ", ".join(screens))
    pairs = [(a, b) for i, a in enumerate(sizes) for b in sizes[i + 1 :]]
    print("\nratios, per round (medians of the round's reps); goal: end to end N=2000 ÷ N=20 <= 2")
    print(f"{'':52s}" + "".join(f"{f'{b} ÷ {a}':>26s}" for a, b in pairs))
    for label, key_big, key_small in RATIOS:
        cells = []
        for a, b in pairs:
            x, y = med(b, key_big), med(a, key_small)
            cells.append(ratio(x, y) if x and y and len(x) == len(y) else "-")
        if any(c != "-" for c in cells):
            print(f"{label:52s}" + "".join(f"{c:>26s}" for c in cells))
    print("\nRSS (a fresh process each):")
    for label, got in rss:
        mb = f"VmRSS {got['rss_kb'] / 1024:6.1f} MB, VmHWM {got['hwm_kb'] / 1024:6.1f} MB"
        print(f"  {label:42s} {mb}, rows {got['rows']}, records {got['records']}")
    if prof_text:
        print("\n" + prof_text)
    return 0


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="20,100,2000", help="N, comma-separated, smallest first")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--rss-child", nargs=3, metavar=("DATA_DIR", "SU_DSN", "N"),
                    help=argparse.SUPPRESS)  # fmt: skip
    ap.add_argument("--full", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rss_child:
        data_dir, dsn, count = args.rss_child
        asyncio.run(rss_child(Path(data_dir), dsn, int(count), args.full))
    else:
        sizes = sorted(int(x) for x in args.sizes.split(","))
        sys.exit(asyncio.run(main(sizes, args.rounds, args.reps, args.profile)))
