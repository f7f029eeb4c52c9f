"""Helpers of the notification tests: settings for a test engine, outbox rows, waiting."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from fleet_core.auth.secret_store import SecretStore
from fleet_core.config import Settings
from fleet_core.db.database import Database

KEY = base64.b64encode(b"n" * 32).decode()
RAW_KEY = b"n" * 32


def notify_settings(data_dir: Path, host_id: str = "notify-host", **extra: Any) -> Settings:
    fields: dict[str, Any] = {
        "data_dir": data_dir,
        "host_id": host_id,
        "key_encryption_key": KEY,
        "notify_retry_base_seconds": 0.02,
        "notify_retry_max_seconds": 0.2,
        "notify_poll_seconds": 0.5,
        "notify_desktop": False,
        "operator": "alice",
    }
    fields.update(extra)
    return Settings(**fields)


def secret_store(db: Database) -> SecretStore:
    return SecretStore(db, lambda: RAW_KEY, "test key")


async def add_event(
    su: asyncpg.Connection,
    key: str,
    *,
    operator: str = "alice",
    event: str = "task.merged",
    **payload: Any,
) -> None:
    doc = {"task_id": None, "to_status": event.split(".")[-1], "from_status": "ready",
           "branch": "fleet/x", **payload}  # fmt: skip
    await su.execute(
        "INSERT INTO fleet_outbox (operator_id, event_type, payload, dedup_key) "
        "VALUES ($1, $2, $3::jsonb, $4)",
        operator, event, json.dumps(doc), key,
    )  # fmt: skip


async def wait_for(
    check: Callable[[], Awaitable[bool]], timeout: float = 60.0, what: str = "condition"
) -> None:
    """Until `check()` holds; fails the test after `timeout` (a bound, not a measurement)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not await check():
        if loop.time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def unsettled(su: asyncpg.Connection) -> int:
    return int(await su.fetchval(
        "SELECT count(*) FROM fleet_outbox WHERE processed_at IS NULL AND dead_at IS NULL"
    ))  # fmt: skip
