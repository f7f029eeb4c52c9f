"""NATS JetStream, when FLEET_NATS_URL is set: every outbox event is published to
`fleet.<event>` (e.g. fleet.task.merged) on the stream `nats_stream`, which is created if
missing (subjects fleet.>, limits from the settings). `Nats-Msg-Id` is the event's dedup key,
so JetStream drops a repeat (a publish redone after a crash); the operator travels in the
payload and in a `Fleet-Operator` header (operator ids may contain dots, so never in the
subject).

The pump publishes outbox rows with `published_at IS NULL` oldest first, one engine at a time
(a transaction-level advisory lock), and stops at the first failure: events leave in order
(per task, the order of its transitions), and while NATS is down they wait in the database;
nothing is lost, and `connected` / `last_error` say so for the health line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import StreamConfig
from nats.js.errors import NotFoundError

from fleet_core.config import Settings
from fleet_core.db.database import Database, Tenant
from fleet_core.notify.channels import Outcome

log = logging.getLogger(__name__)
SUBJECTS = "fleet.>"
OPERATOR_HEADER = "Fleet-Operator"
CONNECT_TIMEOUT_S = 2.0
PUBLISH_TIMEOUT_S = 5.0
PUMP_LOCK = (0x464C54, 2)  # our advisory-lock namespace ("FLT"), key 2: the NATS pump
PUMP_BATCH = 200


def subject(event_type: str) -> str:
    return f"fleet.{event_type}"


def event_doc(row: Mapping[str, Any]) -> dict[str, Any]:
    created = row.get("created_at")
    return {
        "id": str(row["dedup_key"] or row["id"]),
        "event": str(row["event_type"]),
        "operator_id": str(row["operator_id"]),
        "data": row["payload"] or {},
        "created_at": created.isoformat() if isinstance(created, datetime) else created,
    }


async def ensure_stream(js: JetStreamContext, settings: Settings) -> None:
    try:
        await js.stream_info(settings.nats_stream)
    except NotFoundError:
        await js.add_stream(
            StreamConfig(
                name=settings.nats_stream,
                subjects=[SUBJECTS],
                max_age=settings.nats_max_age_hours * 3600,
                max_bytes=settings.nats_max_bytes,
                duplicate_window=120.0,
            )
        )


async def _quiet(exc: Exception) -> None:
    log.debug("nats: %s", exc)


async def connect(settings: Settings) -> Client:
    """One connection attempt, bounded (nats-py alone keeps retrying a refused connect)."""
    assert settings.nats_url
    async with asyncio.timeout(CONNECT_TIMEOUT_S * 2):
        return await nats.connect(
            settings.nats_url,
            connect_timeout=CONNECT_TIMEOUT_S,
            allow_reconnect=False,
            max_reconnect_attempts=0,
            name=f"fleet-{settings.host_id}",
            error_cb=_quiet,
        )


class NatsPublisher:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._nc: Client | None = None
        self._js: JetStreamContext | None = None
        self._lock = asyncio.Lock()
        self.last_error: str | None = None

    @property
    def connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def _context(self) -> JetStreamContext:
        async with self._lock:
            if self._js is None or not self.connected:
                await self.close()
                nc = await connect(self.settings)
                js = nc.jetstream(timeout=PUBLISH_TIMEOUT_S)
                try:
                    await ensure_stream(js, self.settings)
                except BaseException:
                    await nc.close()
                    raise
                self._nc, self._js = nc, js
            return self._js

    async def publish(self, row: Mapping[str, Any]) -> Outcome:
        doc = event_doc(row)
        headers = {"Nats-Msg-Id": doc["id"], OPERATOR_HEADER: doc["operator_id"]}
        try:
            js = await self._context()
            ack = await js.publish(subject(doc["event"]), json.dumps(doc).encode(),
                                   headers=headers, timeout=PUBLISH_TIMEOUT_S)  # fmt: skip
        except (OSError, TimeoutError, nats.errors.Error) as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"[:200] or type(exc).__name__
            await self.close()
            return Outcome(False, None, None, False, f"NATS: {self.last_error}")
        self.last_error = None
        return Outcome(True, int(ack.seq))

    async def close(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()


async def pump(db: Database, publisher: NatsPublisher, max_age_s: float) -> int:
    """Publish the unpublished events (younger than the stream keeps), oldest first, until
    the first failure; returns how many were published. Another engine pumping: 0."""
    published = 0
    async with db.tx(Tenant.admin()) as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, $2)", *PUMP_LOCK):
            return 0
        rows = await conn.fetch(
            """SELECT * FROM fleet_outbox
                WHERE published_at IS NULL
                  AND created_at > now() - make_interval(secs => $1)
                ORDER BY created_at, id LIMIT $2""",
            max_age_s, PUMP_BATCH,
        )  # fmt: skip
        done = []
        for row in rows:
            out = await publisher.publish(dict(row))
            if not out.ok:
                break
            done.append(row["id"])
        if done:
            await conn.execute(
                "UPDATE fleet_outbox SET published_at = now() WHERE id = ANY($1::uuid[])", done
            )
            published = len(done)
    return published
