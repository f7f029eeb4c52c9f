"""Spawning an agent ÷ the bare minimum it must do, and sandboxed ÷ unsandboxed, in one run.

spawn: LocalRuntime.spawn of the demo agent, until the launcher reports the agent process
started (validation, git checks, the per-task `git clone --shared`, secrets with their audit
row, 0600 files, tmux session, launcher start); once without a sandbox and once in the
sandbox (bubblewrap, setpriv to the agent user when root, slirp4netns up before the agent
runs, the seccomp filter).
baseline: `git clone --shared` + `tmux new-session -d` (running `sleep`), nothing else.
Medians of N of each, interleaved; goals: spawn ÷ baseline <= 1.3, sandboxed ÷ unsandboxed
<= 1.2.

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
from fleet_core.runtime.handles import SpawnSpec
from fleet_core.runtime.local import LocalRuntime
from fleet_core.runtime.paths import RuntimePaths
from fleet_core.runtime.policy import sandbox_for
from fleet_core.runtime.proc import run
from fleet_core.runtime.sandbox import SandboxMode
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
    secrets = SecretProvider(db, environ={"FLEET_DEMO_DELAY": "0"})
    rt = LocalRuntime(
        RuntimePaths.under(settings.data_dir), build_adapters(), secrets, host_id="bench"
    )
    sandbox, _ = sandbox_for(settings, SandboxMode.REQUIRED)
    boxed = LocalRuntime(
        RuntimePaths.under(root / "boxed"), build_adapters(), secrets, host_id="bench",
        sandbox=sandbox,
    )  # fmt: skip
    sock = "fleet-bench-" + uuid.uuid4().hex[:8]
    bare_dir = root / "bare"
    bare_dir.mkdir()

    async def spawn_once(runtime: LocalRuntime = rt) -> float:
        tid = uuid.uuid4()
        t0 = time.perf_counter()
        branch = f"fleet/s-{tid.hex[:12]}"
        prompt = "bench prompt [demo:stall]"
        await runtime.spawn(SpawnSpec(tid, "bench", repo, branch, AgentType.DEMO, "demo", prompt))
        return time.perf_counter() - t0

    async def bare_once() -> float:
        name = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        await run(["git", "clone", "-q", "--shared", str(repo), str(bare_dir / name)])
        await run(["tmux", "-L", sock, "new-session", "-d", "-s", name, "-c", str(bare_dir / name),
                   "sleep", "600"])  # fmt: skip
        return time.perf_counter() - t0

    await spawn_once()  # warm-up: tmux servers, imports, prepared statements
    await spawn_once(boxed)
    await bare_once()
    spawns, boxes, bares = [], [], []
    try:
        for _ in range(n):
            bares.append(await bare_once())
            spawns.append(await spawn_once())
            boxes.append(await spawn_once(boxed))
    finally:
        await run(["tmux", "-L", sock, "kill-server"], check=False)
        await rt.tmux.kill_server()
        await boxed.tmux.kill_server()
        await db.close()
        cluster_for(settings).destroy()
    s, x, b = (statistics.median(v) for v in (spawns, boxes, bares))
    print(f"n={n}; sandbox network: {settings.sandbox_network.value}")
    print(f"spawn, no sandbox        median {s * 1000:6.1f} ms  (min {min(spawns) * 1000:.1f})")
    print(f"spawn, sandboxed         median {x * 1000:6.1f} ms  (min {min(boxes) * 1000:.1f})")
    print(f"bare clone + tmux        median {b * 1000:6.1f} ms  (min {min(bares) * 1000:.1f})")
    print(f"ratio spawn / bare: {s / b:.2f}  (goal <= 1.3)")
    print(f"ratio sandboxed / unsandboxed: {x / s:.2f}  (goal <= 1.2)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20)
    asyncio.run(main(ap.parse_args().n))
