"""An engine's outbox worker in a process of its own, for the crash test: prints "ready" when
it listens, then delivers until it is killed."""

from __future__ import annotations

import asyncio
import json
import sys

from fleet_core.db.database import Database
from fleet_core.notify.service import NotifyService
from notify_support import notify_settings, secret_store


async def main(doc: dict) -> None:
    db = await Database.connect(doc["dsn"], owner_dsn=doc["dsn"], mode="embedded")
    settings = notify_settings(doc["data_dir"], host_id=doc["host_id"])
    svc = NotifyService(settings, db, secret_store(db))
    await svc.start()
    print("ready", flush=True)
    await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
