"""An engine process for the reconcile tests: spawns two hanging demo agents as alice, prints
their ids as one JSON line, then runs its monitor until it is killed. `settings` in the
argument's JSON adds to (or replaces) the engine's settings (container mode's test)."""

from __future__ import annotations

import asyncio
import json
import sys

from fleet_core.conductor import Actor, Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database
from fleet_core.models import SpawnRequest, Tier
from fleet_core.monitor import Monitor, MonitorConfig


async def main(doc: dict) -> None:
    fields = {"data_dir": doc["data_dir"], "host_id": "test-host",
              "secrets": {"FLEET_DEMO_DELAY": "0"}, **doc.get("settings", {})}  # fmt: skip
    settings = Settings(**fields)
    db = await Database.connect(doc["dsn"], owner_dsn=doc["dsn"], mode="embedded")
    conductor = Conductor.from_settings(settings, db)
    ids = []
    for i in range(2):
        request = SpawnRequest(description=f"wait {i} [demo:hang]", repository=doc["repo"],
                               task_type="docs", agent_type="demo")  # fmt: skip
        out = await conductor.spawn(Actor("alice", Tier.SOVEREIGN), request)
        assert out.task is not None
        ids.append(str(out.task.id))
    monitor = Monitor(conductor, MonitorConfig(interval_s=0.2))
    await monitor.start()
    print(json.dumps(ids), flush=True)
    await asyncio.Event().wait()  # until SIGKILL


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
