"""Container mode's spawn ÷ a bare `docker run` of the same image with the same mounts.

spawn: ContainerRuntime.spawn of the demo agent until the launcher (the container's PID 1)
reports the agent started: validation, git checks, the per-task `git clone --shared`, secrets
with their audit row, the 0600 files, the hardened create + start through the Engine API
(aiodocker), the `go` gate.
baseline: the same `git clone --shared`, then `docker run -d` of the same image with the same
binds (checkout, HOME, run dir, launcher, the repository's objects) and hardening flags,
running `sleep` (the CLI's own create + start; nothing of fleet's).
Medians of N of each, interleaved; goal: spawn ÷ baseline <= 1.3. Needs a Docker daemon and
the demo image (`fleet image build --agent demo`).

    python benchmarks/bench_container.py [-n 10]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from fleet_core.config import Settings
from fleet_core.db.connect import cluster_for, open_database
from fleet_core.models import AgentType
from fleet_core.runtime import launch
from fleet_core.runtime.adapters import build_adapters
from fleet_core.runtime.container import ContainerRuntime
from fleet_core.runtime.container_body import BASE_PATH
from fleet_core.runtime.docker_images import image_tag
from fleet_core.runtime.handles import SpawnSpec
from fleet_core.runtime.paths import RuntimePaths
from fleet_core.runtime.proc import run
from fleet_core.runtime.secrets import SecretProvider

sys.path.insert(0, str(Path(__file__).parent))
from bench_spawn import make_repo


async def main(n: int) -> None:
    root = Path(tempfile.mkdtemp(prefix="fleet-bench-container-"))
    settings = Settings(data_dir=root / "data")
    db = await open_database(settings)
    repo = make_repo(root)
    secrets = SecretProvider(db, environ={"FLEET_DEMO_DELAY": "0"})
    rt = ContainerRuntime(
        RuntimePaths.under(settings.data_dir), build_adapters(), secrets, host_id="bench",
        container=settings.container,
    )  # fmt: skip
    image = image_tag(AgentType.DEMO)
    owner = rt.agent_owner
    bare_dir = root / "bare"
    bare_dir.mkdir()
    objects = (repo / ".git" / "objects").resolve()
    spawned: list[uuid.UUID] = []
    names: list[str] = []
    c = settings.container

    async def spawn_once() -> float:
        tid = uuid.uuid4()
        t0 = time.perf_counter()
        branch = f"fleet/s-{tid.hex[:12]}"
        await rt.spawn(SpawnSpec(tid, "bench", repo, branch, AgentType.DEMO, "demo",
                                 "bench prompt [demo:stall]"))  # fmt: skip
        spawned.append(tid)
        return time.perf_counter() - t0

    async def bare_once() -> float:
        name = "fleet-bench-" + uuid.uuid4().hex[:12]
        work, home, rd = bare_dir / name, bare_dir / f"{name}.home", bare_dir / f"{name}.run"
        home.mkdir()
        rd.mkdir(mode=0o700)
        t0 = time.perf_counter()
        await run(["git", "clone", "-q", "--shared", str(repo), str(work)])
        await run(["docker", "run", "-d", "--name", name, "--user", f"{owner.uid}:{owner.gid}",
                   "--read-only", "--tmpfs", f"/tmp:rw,noexec,nosuid,nodev,size={c.tmp_mb}m",
                   "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
                   "--memory", f"{c.memory_mb}m", "--memory-swap", f"{c.memory_mb}m",
                   "--cpus", str(c.nano_cpus / 1e9), "--pids-limit", str(c.pids),
                   "--network", c.network, "-v", f"{work}:{work}:rw",
                   "-v", f"{home}:/home/agent:rw", "-v", f"{rd}:/run/fleet:rw",
                   "-v", f"{Path(launch.__file__).resolve()}:/opt/fleet-launch/launch.py:ro",
                   "-v", f"{objects}:{objects}:ro", "-w", str(work), "-e", f"PATH={BASE_PATH}",
                   "-e", "HOME=/home/agent", image, "/usr/bin/sleep", "600"])  # fmt: skip
        names.append(name)
        return time.perf_counter() - t0

    async def clean() -> None:
        for tid in spawned:
            await rt.kill(tid, 0)
        spawned.clear()
        if names:
            await run(["docker", "rm", "-f", *names], check=False)
            names.clear()

    await spawn_once()  # warm-up: the client's connection, imports, prepared statements
    await bare_once()
    await clean()
    spawns, bares = [], []
    try:
        for _ in range(n):
            bares.append(await bare_once())
            spawns.append(await spawn_once())
            await clean()
    finally:
        await clean()
        await rt.close()
        await rt.tmux.kill_server()
        await db.close()
        cluster_for(settings).destroy()
        await asyncio.to_thread(shutil.rmtree, root, True)
    s, b = statistics.median(spawns), statistics.median(bares)
    print(f"n={n}; image {image}; network {c.network}")
    print(f"container spawn          median {s * 1000:6.1f} ms  (min {min(spawns) * 1000:.1f})")
    print(f"clone + bare docker run  median {b * 1000:6.1f} ms  (min {min(bares) * 1000:.1f})")
    print(f"ratio spawn / bare: {s / b:.2f}  (goal <= 1.3)")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10)
    asyncio.run(main(ap.parse_args().n))
