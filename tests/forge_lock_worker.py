"""An engine process for the forge-lock test: runs monitor cycles on a GitHub repository
answered by the fake `gh` (its FAKE_GH_* variables come from this process's environment),
until it is killed."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from fleet_core.conductor import Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database
from fleet_core.monitor import Monitor, MonitorConfig

HERE = Path(__file__).parent


async def main(doc: dict) -> None:
    settings = Settings(data_dir=doc["data_dir"], host_id="worker-host",
                        repos={doc["repo"]: {"forge": "github"}},
                        gh=str(HERE / "fake_gh" / "gh"))  # fmt: skip
    db = await Database.connect(doc["dsn"], owner_dsn=doc["dsn"], mode="embedded")
    monitor = Monitor(Conductor.from_settings(settings, db), MonitorConfig(deadline_s=3600))
    print("ready", flush=True)
    while True:
        await monitor.cycle()  # until SIGKILL
        await asyncio.sleep(0.05)


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
