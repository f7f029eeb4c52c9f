"""Spawning an agent ÷ the bare minimum it must do, in the same run.

spawn: LocalRuntime.spawn of the demo agent, until the launcher reports the agent process
started (validation, git checks, `git worktree add` under the repo lock, secrets with their
audit row, 0600 files, tmux session, launcher start).
baseline: `git worktree add -b` + `tmux new-session -d` (running `sleep`), nothing else.
Medians of N of each, interleaved; goal: spawn ÷ baseline <= 1.3.

    python benchmarks/bench_spawn.py [-n 20]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from fleet_core.config import Settings
from fleet_core.db.connect import cluster_for, open_database
from fleet_core.models import AgentType
from fleet_core.runtime.adapters import build_adapters
from fleet_core.runtime.local import LocalRuntime, RuntimePaths, SpawnSpec
from fleet_core.runtime.proc import run
from fleet_core.runtime.secrets import SecretProvider

ID = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid"]


def make_repo(root: Path) -> Path:
    origin, work = root / "origin.git", root / "repo"
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    (work / "README.md").write_text("bench\n")
    steps = [
        ["add", "README.md"],
        ["commit", "-q", "-m", "init"],
        ["remote", "add", "origin", str(origin)],
        ["push", "-q", "-u", "origin", "main"],
    ]
    for args in steps:
        subprocess.run(["git", "-C", str(work), *ID, *args], check=True)
    return work


async def main(n: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-spawn-"))
    settings = Settings(data_dir=root / "data")
    db = await open_database(settings)
    repo = make_repo(root)
    rt = LocalRuntime(
        RuntimePaths.under(settings.data_dir),
        build_adapters(),
        SecretProvider(db, environ={"FLEET_DEMO_DELAY": "0"}),
        host_id="bench",
    )
    sock = "fleet-bench-" + uuid.uuid4().hex[:8]
    bare_dir = root / "bare"
    bare_dir.mkdir()

    async def spawn_once() -> float:
        tid = uuid.uuid4()
        t0 = time.perf_counter()
        await rt.spawn(SpawnSpec(tid, "bench", repo, f"fleet/s-{tid.hex[:12]}", AgentType.DEMO,
                                 "demo", "bench prompt [demo:stall]"))  # fmt: skip
        return time.perf_counter() - t0

    async def bare_once() -> float:
        name = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        await run(["git", "-C", str(repo), "worktree", "add", "-q", "-b", f"bare/{name}",
                   str(bare_dir / name), "main"])  # fmt: skip
        await run(["tmux", "-L", sock, "new-session", "-d", "-s", name, "-c", str(bare_dir / name),
                   "sleep", "600"])  # fmt: skip
        return time.perf_counter() - t0

    await spawn_once()  # warm-up: tmux servers, imports, prepared statements
    await bare_once()
    spawns, bares = [], []
    try:
        for _ in range(n):
            bares.append(await bare_once())
            spawns.append(await spawn_once())
    finally:
        await run(["tmux", "-L", sock, "kill-server"], check=False)
        await rt.tmux.kill_server()
        await db.close()
        cluster_for(settings).destroy()
    s, b = statistics.median(spawns), statistics.median(bares)
    print(f"n={n}")
    print(f"spawn (demo agent started) median {s * 1000:6.1f} ms  (min {min(spawns) * 1000:.1f})")
    print(f"bare worktree add + tmux   median {b * 1000:6.1f} ms  (min {min(bares) * 1000:.1f})")
    print(f"ratio spawn / bare: {s / b:.2f}  (goal <= 1.3)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20)
    asyncio.run(main(ap.parse_args().n))
