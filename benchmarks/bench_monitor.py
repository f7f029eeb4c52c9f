"""Monitor cycle time and GitHub (gh) calls per cycle at N = 10, 100, 500 live tasks.

Goal: gh calls per cycle <= ceil(N/50) + 1, and time(500) ÷ time(10) <= 3.

Real PostgreSQL (a throwaway embedded cluster), real tmux for liveness, the fake `gh` of the
tests (tests/fake_gh/gh: a Python script answering from a JSON world, one process per call,
logging every call; its `env python3` resolves to this interpreter, not a pyenv shim, which
added ~60 ms per call here). For each N, N live tasks are inserted as rows (superuser DSN) on this
engine's host, in one repository whose origin is https://github.com/acme/widgets.git and whose
forge is set to github:

- N/2 `running`, branch with no PR in the fake world, each with a real tmux session
  `fleet-<id>` on the runtime's own socket running `sleep 3600` (liveness: the pane is not
  dead, by `tmux display-message` per task or one `tmux list-panes -a` for all, depending
  on the monitor's version, and no `exit` file in the run dir, absent here);
- N/2 `pr_created`, with a PR whose one check is IN_PROGRESS and `ci_status` already
  `pending`, so `_ci` finds nothing to write.

With --old (the default), the running tasks are old: spawned 2 h ago (past the default
`stall_minutes` of 30, within their timeout_minutes = 480), each with a real checkout (a
`git clone --shared` of the repository, on its own branch, at `worktrees/<task id>`), so every
cycle runs the publishing step (is there a new commit to push?) and the stall check (the
branch's last commit) for each of them; their branches are pushed (to a local bare repository
standing in for GitHub, through pushInsteadOf) and their stall warnings given in the warm-up
cycle. With --no-old: spawned_at = now() and no checkout, so neither step reaches git. No
task changes status, so every cycle does the same work: list_live, the liveness of the
running tasks, publishing, find_prs over the running branches and ci_status over the PRs (50
per gh call), `_check` per task (timeouts, idleness, stalls), the retry and queue queries.

Each N is a block: fresh rows, sessions, fake world and Conductor (so a fresh GitHubForge,
whose `gh auth status` check, every 5 minutes, lands in the block's warm-up cycle), one
warm-up cycle, then --cycles measured cycles; then the tasks are truncated and the tmux
server killed. Blocks (not single cycles) are interleaved, since the monitor checks every
live task: --rounds rounds, the order of N rotating, so drift hits every N alike. Per cycle:
`report.ms`, the gh calls (lines appended to the fake gh's log during the cycle), and where
the time went: liveness (the monitor's `_alive`, and the runtime's `alive_tasks` where the
monitor uses it), forges (`_poll_forges`), checks (`_check`, all tasks), list_live
(`admin.list_live`), each wrapped on the instance with a timer; the rest of `report.ms` is
the retry and queue queries and the loop. Exits 1 if a measured cycle makes more gh calls
than the goal, or any cycle reports errors or checks other than N tasks.

    python benchmarks/bench_monitor.py [--rounds 3] [--cycles 5] [--profile] [--no-old]

--profile: afterwards, one more N=500 block under cProfile (3 cycles), top functions printed.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import json
import math
import os
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from fleet_core.conductor import Conductor
from fleet_core.config import Settings
from fleet_core.db.bootstrap import DEFAULT_DATABASE
from fleet_core.db.connect import cluster_for, open_database
from fleet_core.db.database import Database
from fleet_core.forge.github import GitHubForge
from fleet_core.forge.select import ForgeSet
from fleet_core.monitor import Monitor, MonitorConfig

SIZES = (10, 100, 500)
HOST = "bench-host"
FAKE_GH = Path(__file__).resolve().parent.parent / "tests" / "fake_gh"
SESSIONS_PER_TMUX_CALL = 50
PARTS = ("liveness", "publish", "forges", "checks", "list_live")
CONFIG = MonitorConfig(deadline_s=120.0)  # the defaults, with room for a slow cycle

INSERT = (
    "INSERT INTO fleet_tasks (id, operator_id, agent_type, model, task_type, description,"
    " branch, repository, status, pr_number, ci_status, host_id, tmux_session, spawned_at,"
    " timeout_minutes, worktree_path) VALUES ($1, 'bench', 'demo', 'demo', 'feature', 'bench',"
    " $2, $3, $4, $5, $6, $7, $8, now() - make_interval(mins => $9), 480, $10)"
)
OLD_MINUTES = 120  # an old task's age: past the default stall_minutes (30)


def gh_calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def tmux(socket: str, *args: str) -> None:
    subprocess.run(["tmux", "-L", socket, *args], check=True, capture_output=True)


def kill_tmux_server(socket: str) -> None:
    where = subprocess.run(
        ["tmux", "-L", socket, "display-message", "-p", "#{socket_path}"],
        capture_output=True, text=True,
    )  # fmt: skip
    subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)
    if where.returncode == 0 and where.stdout.strip():
        # tmux 3.3 leaves the socket file; a server started on it right after dies at once.
        Path(where.stdout.strip()).unlink(missing_ok=True)


def timed(into: dict[str, float], part: str, fn: Callable[..., Awaitable[Any]]) -> Any:
    async def wrapper(*args: Any, **kw: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return await fn(*args, **kw)
        finally:
            into[part] += (time.perf_counter() - t0) * 1000

    return wrapper


class Bench:
    def __init__(
        self,
        root: Path,
        settings: Settings,
        db: Database,
        su: asyncpg.Connection,
        latency_ms: int = 0,
        old: bool = True,
    ):
        self.root, self.settings, self.db, self.su = root, settings, db, su
        self.old = old
        self.repo = root / "widgets"
        url = "https://github.com/acme/widgets.git"
        subprocess.run(["git", "init", "-q", "-b", "main", str(self.repo)], check=True)
        for args in (["remote", "add", "origin", url],
                     ["config", f"url.{root / 'github.git'}.pushInsteadOf", url],
                     ["-c", "user.name=b", "-c", "user.email=b@x", "commit", "-q",
                      "--allow-empty", "-m", "base"]):  # fmt: skip
            subprocess.run(["git", "-C", str(self.repo), *args], check=True)
        subprocess.run(["git", "init", "-q", "--bare", str(root / "github.git")], check=True)
        self.pool = root / "checkouts"  # old tasks' checkouts, by index, moved between blocks
        self.pool.mkdir()
        self.world, self.log = root / "world.json", root / "gh.log"
        self.env = {
            **os.environ,
            # The fake's `#!/usr/bin/env python3` finds this interpreter, not a pyenv shim.
            "PATH": os.pathsep.join(
                [str(FAKE_GH), os.path.dirname(sys.executable), os.environ["PATH"]]
            ),
            "FAKE_GH_STATE": str(self.world),
            "FAKE_GH_LOG": str(self.log),
            "FAKE_GH_LATENCY_MS": str(latency_ms),  # a simulated network round trip per call
        }
        self.socket = ""

    def conductor(self) -> Conductor:
        """A fresh conductor, with a fresh GitHubForge on the fake gh."""
        c = Conductor.from_settings(self.settings, self.db)
        c.forges = ForgeSet(
            self.root / "forge", repos=c.repos, github=GitHubForge(env=self.env)
        )  # fmt: skip
        self.socket = c.runtime.paths.tmux_socket
        return c

    def checkout(self, i: int, branch: str, tid: uuid.UUID) -> Path:
        """The i-th old task's checkout, made once and moved to `worktrees/<tid>`."""
        kept = self.pool / str(i)
        if not kept.exists():
            subprocess.run(["git", "clone", "-q", "--shared", str(self.repo), str(kept)],
                           check=True)  # fmt: skip
            subprocess.run(["git", "-C", str(kept), "checkout", "-q", "-b", branch], check=True)
        where = self.settings.data_dir / "worktrees" / str(tid)
        where.parent.mkdir(parents=True, exist_ok=True)
        kept.rename(where)
        self.placed.append((where, kept))
        return where

    async def setup(self, c: Conductor, n: int) -> Monitor:
        """n live tasks, their sessions and the fake world; a monitor on `c`."""
        rows, prs, running = [], [], []
        self.placed: list[tuple[Path, Path]] = []
        for i in range(n):
            tid = uuid.uuid4()
            if i % 2 == 0:
                branch = f"fleet/bench-run-{i}"
                path = str(self.checkout(i, branch, tid)) if self.old else None
                rows.append((tid, branch, str(self.repo), "running", None, None, HOST,
                             f"fleet-{tid}", OLD_MINUTES if self.old else 0, path))  # fmt: skip
                running.append(tid)
            else:
                number = len(prs) + 1
                branch = f"fleet/bench-pr-{i}"
                rows.append((tid, branch, str(self.repo), "pr_created", number, "pending", HOST,
                             None, 0, None))  # fmt: skip
                prs.append({"number": number, "branch": branch, "base": "main", "state": "OPEN",
                            "checks": [{"name": "test", "status": "IN_PROGRESS",
                                        "conclusion": None}]})  # fmt: skip
        self.world.write_text(json.dumps({
            "repo": "acme/widgets", "logged_in": True, "prs": prs, "comments": [],
            "rate_limit": {"remaining": 5000, "limit": 5000, "reset_at": "2030-01-01T00:00:00Z"},
        }))  # fmt: skip
        await self.su.executemany(INSERT, rows)
        for k in range(0, len(running), SESSIONS_PER_TMUX_CALL):
            args: list[str] = []
            for tid in running[k : k + SESSIONS_PER_TMUX_CALL]:
                args += [";"] if args else []
                args += ["new-session", "-d", "-s", f"fleet-{tid}", "sleep", "3600"]
            tmux(self.socket, *args)
        return Monitor(c, CONFIG)

    async def teardown(self, c: Conductor) -> None:
        await c.stop_engine()
        await self.su.execute("TRUNCATE fleet_tasks CASCADE")
        await asyncio.to_thread(kill_tmux_server, self.socket)
        for where, kept in getattr(self, "placed", []):
            where.rename(kept)
        self.placed = []

    async def block(self, n: int, cycles: int) -> list[dict[str, float]]:
        """One warm-up and `cycles` measured cycles at n tasks: ms, calls, parts per cycle."""
        c = self.conductor()
        try:
            m = await self.setup(c, n)
        except BaseException:
            await self.teardown(c)
            raise
        parts: dict[str, float] = defaultdict(float)
        m._alive = timed(parts, "liveness", m._alive)  # type: ignore[method-assign]
        rt: Any = c.runtime
        if hasattr(rt, "alive_tasks"):  # the batched liveness check, where the monitor has it
            rt.alive_tasks = timed(parts, "liveness", rt.alive_tasks)
        m._poll_forges = timed(parts, "forges", m._poll_forges)  # type: ignore[method-assign]
        pub: Any = getattr(m, "publisher", None)
        if pub is not None:  # publishing in its own module (since the monitor's split)
            pub.push = timed(parts, "publish", pub.push)
        elif hasattr(m, "_publish"):
            m._publish = timed(parts, "publish", m._publish)
        m._check = timed(parts, "checks", m._check)  # type: ignore[method-assign]
        m.admin.list_live = timed(parts, "list_live", m.admin.list_live)  # type: ignore[method-assign]
        out = []
        try:
            for k in range(cycles + 1):
                parts.clear()
                before = gh_calls(self.log)
                report = await m.cycle()
                calls = gh_calls(self.log) - before
                assert report is not None
                ok = report.errors == [] and report.checked == n
                ok = ok and (k == 0 or calls <= math.ceil(n / 50) + 1)
                if not ok:
                    print(f"  FAIL n={n} cycle {k}: calls {calls}, checked {report.checked}, "
                          f"errors {report.errors[:3]}")  # fmt: skip
                out.append({"ms": report.ms, "calls": calls, "ok": ok, **parts})
        finally:
            await self.teardown(c)
        return out


async def main(rounds: int, cycles: int, profile: bool, latency_ms: int, old: bool) -> int:
    if shutil.which("tmux") is None:
        print("tmux is not installed")
        return 1
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-monitor-"))
    settings = Settings(
        data_dir=root / "data",
        host_id=HOST,
        repos={str(root / "widgets"): {"forge": "github"}},
    )
    cluster = cluster_for(settings)
    db = await open_database(settings)
    warm: dict[int, list[dict[str, float]]] = {n: [] for n in SIZES}
    runs: dict[int, list[list[dict[str, float]]]] = {n: [] for n in SIZES}
    prof_text = ""
    t_start = time.perf_counter()
    try:
        su = await asyncpg.connect(cluster.info.dsn("postgres", DEFAULT_DATABASE))
        try:
            bench = Bench(root, settings, db, su, latency_ms, old)
            for r in range(rounds):
                k = r % len(SIZES)
                for n in SIZES[k:] + SIZES[:k]:  # interleaved, order rotating
                    got = await bench.block(n, cycles)
                    warm[n].append(got[0])
                    runs[n].append(got[1:])
                    ms = statistics.median(c["ms"] for c in got[1:])
                    calls = [int(c["calls"]) for c in got[1:]]
                    print(f"round {r + 1} n={n:3d}: warm-up {got[0]['ms']:7.1f} ms "
                          f"({got[0]['calls']:.0f} calls), cycles median {ms:7.1f} ms, "
                          f"calls {calls}")  # fmt: skip
            if profile:
                prof = cProfile.Profile()
                c = bench.conductor()
                try:
                    m = await bench.setup(c, 500)
                    await m.cycle()  # warm-up
                    prof.enable()
                    for _ in range(3):
                        await m.cycle()
                    prof.disable()
                finally:
                    await bench.teardown(c)
                buf = io.StringIO()
                pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
                prof_text = buf.getvalue()
        finally:
            await su.close()
    finally:
        await db.close()
        cluster.destroy()
        shutil.rmtree(root, ignore_errors=True)
    elapsed = time.perf_counter() - t_start

    print(
        f"\nrounds={rounds} cycles={cycles} (+1 warm-up per block), {elapsed:.0f} s in all, "
        f"running tasks {'old (stall check, checkouts)' if old else 'new, no checkout'}"
    )
    hdr = "  ".join(f"{p:>9s}" for p in PARTS)
    print(f"{'N':>4s} {'median ms':>10s} {'min':>7s} {'max':>7s}  {'calls':>7s} {'goal':>4s}"
          f" {'warm-up calls':>13s}  median ms in: {hdr}")  # fmt: skip
    med: dict[int, list[float]] = {}
    own: dict[int, list[float]] = {}  # the cycle without the forges' part (the fake gh)
    units: list[str] = []
    failures = 0
    for n in SIZES:
        flat = [c for block in runs[n] for c in block]
        ms = [c["ms"] for c in flat]
        med[n] = [statistics.median(c["ms"] for c in block) for block in runs[n]]
        own[n] = [statistics.median(c["ms"] - c.get("forges", 0.0) for c in block)
                  for block in runs[n]]  # fmt: skip
        calls = sorted({int(c["calls"]) for c in flat})
        failures += sum(not c["ok"] for c in flat) + sum(not c["ok"] for c in warm[n])
        parts = "  ".join(f"{statistics.median(c.get(p, 0.0) for c in flat):9.1f}" for p in PARTS)
        wcalls = sorted({int(c["calls"]) for c in warm[n]})
        print(f"{n:4d} {statistics.median(ms):10.1f} {min(ms):7.1f} {max(ms):7.1f}  "
              f"{'/'.join(map(str, calls)):>7s} {math.ceil(n / 50) + 1:4d} "
              f"{'/'.join(map(str, wcalls)):>13s}  {' ' * 14}{parts}")  # fmt: skip
        per_alive = statistics.median(c.get("liveness", 0.0) / (n - n // 2) for c in flat)
        per_call = statistics.median(c["forges"] / c["calls"] for c in flat if c["calls"])
        units.append(
            f"N={n}: {per_alive:.3f} ms of liveness per running task, {per_call:.1f} ms per gh call"
        )
    print("\n".join(units))
    for n in SIZES[1:]:
        ratios = [a / b for a, b in zip(med[n], med[SIZES[0]], strict=True)]
        print(f"time({n}) / time({SIZES[0]}) per round: median {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})"
              + ("  goal <= 3" if n == SIZES[-1] else ""))  # fmt: skip
    for n in SIZES:
        print(
            f"N={n}: the monitor's own work (cycle minus forges) median "
            f"{statistics.median(own[n]):.1f} ms per cycle"
        )
    for n in SIZES[1:]:
        ratios = [a / b for a, b in zip(own[n], own[SIZES[0]], strict=True)]
        print(f"own work({n}) / own work({SIZES[0]}) per round: median "
              f"{statistics.median(ratios):.2f} (min {min(ratios):.2f}, max {max(ratios):.2f}); "
              f"per task: {statistics.median(ratios) * SIZES[0] / n:.2f}")  # fmt: skip
    if prof_text:
        print("\ncProfile of 3 cycles at N=500 (cumulative):")
        print(prof_text)
    print("ok" if failures == 0 else f"FAILED: {failures} cycle(s) broke the call bound or erred")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument(
        "--gh-latency-ms", type=int, default=0, help="the fake gh waits this long per call"
    )
    ap.add_argument(
        "--old", action=argparse.BooleanOptionalAction, default=True,
        help="running tasks past stall_minutes, with checkouts (default); --no-old: new ones",
    )  # fmt: skip
    args = ap.parse_args()
    sys.exit(
        asyncio.run(main(args.rounds, args.cycles, args.profile, args.gh_latency_ms, args.old))
    )
