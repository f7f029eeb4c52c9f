"""A separate engine process for the concurrency tests: fires N spawns at once through its
own Conductor and prints one JSON line per outcome."""

from __future__ import annotations

import asyncio
import json
import sys

from fleet_core.conductor import Actor, Conductor
from fleet_core.config import Settings
from fleet_core.db.database import Database
from fleet_core.errors import SpawnDeniedError
from fleet_core.models import SpawnRequest, Tier


async def main(doc: dict) -> None:
    settings = Settings(**doc["settings"])
    db = await Database.connect(doc["dsn"], owner_dsn=doc["dsn"], mode="embedded")
    conductor = Conductor.from_settings(settings, db)
    actor = Actor(doc["operator"], Tier(doc["tier"]))

    async def one(i: int) -> dict:
        queue = i % doc["queue_every"] == 0
        request = SpawnRequest(
            description=f"{doc['tag']} request {i}",
            repository=doc["repo"],
            task_type="docs",
            agent_type="demo",
            idempotency_key=f"{doc['tag']}-{i}" if queue else None,
        )
        try:
            out = await conductor.spawn(actor, request, queue=queue)
        except SpawnDeniedError as exc:
            return {"i": i, "outcome": "denied", "reason": exc.reason}
        if out.queued:
            return {"i": i, "outcome": "queued", "entry": out.queued.entry_id}
        assert out.task is not None
        return {"i": i, "outcome": "admitted", "task": str(out.task.id), "status": out.task.status}

    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # both processes start together
    results = await asyncio.gather(*(one(i) for i in range(doc["count"])))
    for r in results:
        print(json.dumps(r), flush=True)
    await db.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
