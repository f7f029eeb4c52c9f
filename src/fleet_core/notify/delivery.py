"""Delivering one claimed outbox event: to whom, on which channels, and what each attempt
leaves in `fleet_notifications` (one row per event, operator and channel: attempts, last
status, delivered at, dead-lettered at, next attempt).

Channels are sent in parallel and one failing never blocks another. A failed channel is
tried again after a jittered exponential backoff (or what the receiver's Retry-After asked),
and after `max_attempts` it is dead-lettered; when every channel of an operator's event was
dead-lettered, the CLI line goes out instead, so the event is never silently dropped. (NATS
is not a channel: nats.py publishes every event, in order, beside this.)
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from fleet_core.db.database import Database, Tenant
from fleet_core.models import Tier
from fleet_core.notify.channels import (
    Channel,
    CliChannel,
    DesktopChannel,
    DiscordChannel,
    Message,
    Outcome,
    TelegramChannel,
)
from fleet_core.notify.events import ALL_SOVEREIGNS, message, wanted
from fleet_core.notify.settings import ChannelConfig, ChannelStore

log = logging.getLogger(__name__)
ADMIN = Tenant.admin()
Key = tuple[str, str]  # (operator, channel)
CONFIG_TTL_S = 2.0  # how long an operator's channel settings are reused (a change binds after)

if TYPE_CHECKING:
    import httpx


@dataclass
class Policy:
    max_attempts: int = 8
    base_s: float = 2.0
    max_s: float = 600.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempts: int, retry_after: float | None) -> float:
        """Seconds until the next try after `attempts` failed ones: the receiver's Retry-After
        (plus up to 10 %), else min(base·2^(n-1), max) scaled by a random 0.5 … 1."""
        if retry_after is not None:
            return min(retry_after, 86400.0) * (1 + 0.1 * self.rng.random())
        backoff = min(self.base_s * 2.0 ** max(0, attempts - 1), self.max_s)
        return backoff * (0.5 + 0.5 * self.rng.random())


@dataclass
class LocalOperator:
    """The operator at this machine (desktop notifications; a sovereign for system events)."""

    operator_id: str
    tier: Tier
    desktop: bool = True


class Dispatcher:
    def __init__(
        self,
        db: Database,
        store: ChannelStore | None,
        client: httpx.AsyncClient,
        *,
        policy: Policy,
        telegram_api_url: str = "https://api.telegram.org",
        local: LocalOperator | None = None,
        cli_stream: IO[str] | None = None,
        desktop: DesktopChannel | None = None,
    ) -> None:
        self.db = db
        self.store = store
        self.client = client
        self.policy = policy
        self.telegram_api_url = telegram_api_url
        self.local = local
        self.cli = CliChannel(cli_stream)
        self.desktop = desktop or DesktopChannel()
        self._configs: dict[str, tuple[float, list[ChannelConfig]]] = {}

    async def recipients(self, operator_id: str) -> list[str]:
        if operator_id != ALL_SOVEREIGNS:
            return [operator_id]
        async with self.db.tx(ADMIN) as conn:
            rows = await conn.fetch(
                "SELECT operator_id FROM fleet_config WHERE tier = $1 ORDER BY operator_id",
                Tier.SOVEREIGN.value,
            )
        found = [r["operator_id"] for r in rows]
        if self.local and self.local.tier is Tier.SOVEREIGN and self.local.operator_id not in found:
            found.append(self.local.operator_id)
        return found

    def _channel(self, cfg: ChannelConfig) -> Channel | None:
        if cfg.channel == "discord" and cfg.secret:
            return DiscordChannel(self.client, cfg.secret)
        if cfg.channel == "telegram" and cfg.secret and cfg.target:
            return TelegramChannel(self.client, self.telegram_api_url, cfg.secret, cfg.target)
        if cfg.channel == "desktop":
            return self.desktop
        return None

    async def channels_for(self, op: str) -> list[tuple[ChannelConfig, Channel]]:
        """The operator's working channels (enabled, configured; the desktop by default for
        the local operator when notify-send is installed), with their settings."""
        cached = self._configs.get(op)
        if cached is not None and time.monotonic() - cached[0] < CONFIG_TTL_S:
            configs = cached[1]
        else:
            configs = await self.store.configs(op) if self.store else []
            self._configs[op] = (time.monotonic(), configs)
        by_name = {c.channel: c for c in configs}
        local = self.local is not None and self.local.operator_id == op
        desktop = local and self.local is not None and self.local.desktop
        if desktop and "desktop" not in by_name and self.desktop.binary is not None:
            by_name["desktop"] = ChannelConfig(op, "desktop", None, None, None)
        out = []
        for cfg in by_name.values():
            channel = self._channel(cfg)
            if channel is not None:
                out.append((cfg, channel))
        return out

    async def targets(self, row: Mapping[str, Any]) -> dict[Key, Channel]:
        """Every (operator, channel) this event goes to now, by the operators' settings."""
        out: dict[Key, Channel] = {}
        event_type, payload = str(row["event_type"]), row["payload"] or {}
        for op in await self.recipients(str(row["operator_id"])):
            working = await self.channels_for(op)
            for cfg, channel in working:
                if wanted(event_type, payload, cfg.events):
                    out[(op, cfg.channel)] = channel
            if not working and wanted(event_type, payload, None):
                out[(op, "cli")] = self.cli  # nobody set a channel up: the line is all there is
        return out

    async def process(self, row: Mapping[str, Any], engine_id: str) -> None:
        """One attempt at every due channel of a claimed row; leaves the row processed,
        dead-lettered or due again."""
        targets = await self.targets(row)
        rows = await self._records(row, targets)
        due = [r for r in rows if r["delivered_at"] is None and r["dead_at"] is None
               and r["due"]]  # fmt: skip
        msgs = {op: message(row, op) for op in {r["operator_id"] for r in due}}
        outcomes = await asyncio.gather(
            *(self._send(r, targets, msgs.get(r["operator_id"]), row) for r in due)
        )
        dead = any(r["dead_at"] is not None for r in rows)
        async with self.db.tx(ADMIN) as conn:  # the outcomes and the row's state: one commit
            for rec, out in zip(due, outcomes, strict=True):
                dead = await self._record(conn, rec, out) or dead
            if dead:
                await self._fallback(conn, row)
            await self._settle(conn, row, engine_id)

    async def _records(self, row: Mapping[str, Any], targets: dict[Key, Channel]) -> list[Any]:
        keys = list(targets)
        payload = row["payload"] or {}
        task_id = payload.get("task_id")
        async with self.db.tx(ADMIN) as conn:
            exists = await conn.fetchval(
                "SELECT count(*) FROM fleet_notifications WHERE outbox_id = $1", row["id"]
            )
            if not exists and keys:  # first attempt: the channels are fixed from now on
                await conn.executemany(
                    """INSERT INTO fleet_notifications
                           (outbox_id, operator_id, channel, event_type, payload, task_id)
                       VALUES ($1, $2, $3, $4, $5,
                               (SELECT id FROM fleet_tasks WHERE id = $6::uuid))
                       ON CONFLICT DO NOTHING""",
                    [(row["id"], op, ch, row["event_type"], {"dedup_key": row["dedup_key"]},
                      task_id) for op, ch in keys],
                )  # fmt: skip
            return list(
                await conn.fetch(
                    "SELECT *, (next_attempt_at IS NULL OR next_attempt_at <= now()) AS due "
                    "FROM fleet_notifications WHERE outbox_id = $1 ORDER BY channel",
                    row["id"],
                )
            )

    async def _send(
        self, rec: Any, targets: dict[Key, Channel], msg: Message | None, row: Mapping[str, Any]
    ) -> Outcome:
        channel = targets.get((rec["operator_id"], rec["channel"]))
        if rec["channel"] == "cli":
            channel = self.cli
        if channel is None or msg is None:
            return Outcome(False, None, None, True, "the channel is no longer configured")
        try:
            return await channel.send(msg)
        except Exception as exc:  # a channel's bug must not stop the others
            log.exception("notification channel failed", extra={"channel": rec["channel"]})
            return Outcome(False, None, None, False, f"{type(exc).__name__}: {exc}"[:200])

    async def _record(self, conn: Any, rec: Any, out: Outcome) -> bool:
        """Write one attempt's outcome; True when it dead-lettered the delivery."""
        attempts = rec["attempts"] + 1
        if out.ok:
            await conn.execute(
                "UPDATE fleet_notifications SET attempts = $2, last_status = $3, "
                "last_error = NULL, delivered = true, delivered_at = now(), "
                "next_attempt_at = NULL WHERE id = $1",
                rec["id"], attempts, out.status,
            )  # fmt: skip
            return False
        dead = out.permanent or attempts >= self.policy.max_attempts
        delay = self.policy.delay(attempts, out.retry_after)
        await conn.execute(
            "UPDATE fleet_notifications SET attempts = $2, last_status = $3, last_error = $4, "
            "dead_at = CASE WHEN $5 THEN now() END, "
            "next_attempt_at = CASE WHEN $5 THEN NULL "
            "ELSE now() + make_interval(secs => $6) END WHERE id = $1",
            rec["id"], attempts, out.status, out.error, dead, delay,
        )  # fmt: skip
        if dead:
            log.warning("notification dead-lettered", extra={
                "channel": rec["channel"], "operator": rec["operator_id"],
                "attempts": attempts, "error": out.error})  # fmt: skip
        return dead

    async def _fallback(self, conn: Any, row: Mapping[str, Any]) -> None:
        """An operator whose every channel was dead-lettered gets the CLI line."""
        ops = await conn.fetch(
            """SELECT operator_id FROM fleet_notifications
                WHERE outbox_id = $1 AND channel <> 'cli'
                GROUP BY operator_id
               HAVING bool_and(dead_at IS NOT NULL)""",
            row["id"],
        )
        for r in ops:
            op = r["operator_id"]
            inserted = await conn.fetchval(
                """INSERT INTO fleet_notifications
                       (outbox_id, operator_id, channel, event_type, payload, attempts,
                        delivered, delivered_at)
                   VALUES ($1, $2, 'cli', $3, $4, 1, true, now())
                   ON CONFLICT DO NOTHING RETURNING id""",
                row["id"], op, row["event_type"], {"dedup_key": row["dedup_key"]},
            )  # fmt: skip
            if inserted is not None:
                await self.cli.send(message(row, op))

    async def _settle(self, conn: Any, row: Mapping[str, Any], engine_id: str) -> None:
        await conn.execute(
            """WITH s AS (
                   SELECT count(*) FILTER (WHERE delivered_at IS NULL AND dead_at IS NULL)
                              AS pending,
                          count(*) FILTER (WHERE dead_at IS NOT NULL) AS dead,
                          min(next_attempt_at) FILTER (WHERE delivered_at IS NULL
                                                         AND dead_at IS NULL) AS next_at
                     FROM fleet_notifications WHERE outbox_id = $1)
               UPDATE fleet_outbox o SET
                   locked_by = NULL, locked_until = NULL,
                   retry_count = o.retry_count + 1,
                   processed_at = CASE WHEN s.pending = 0 THEN now() END,
                   dead_at = CASE WHEN s.pending = 0 AND s.dead > 0 THEN now() END,
                   error = CASE WHEN s.dead > 0 THEN s.dead || ' channel(s) dead-lettered'
                           END,
                   next_attempt_at = COALESCE(s.next_at, now())
                 FROM s
                WHERE o.id = $1 AND o.locked_by = $2""",
            row["id"], engine_id,
        )  # fmt: skip
