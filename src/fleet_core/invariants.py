"""Invariants INV-014 … INV-018 as the PRD defines them, each with a `verify` that reads the
database (and, for INV-015, this host's runtime) and returns the violations it finds.

- INV-014: an operator's slot-holding tasks never exceed their tier's limit.
- INV-015: every agent is tracked: each agent session on this host has a row, and each
  spawning/running row of this host has its session.
- INV-016: every terminal task has its audit entry (written with the status change).
- INV-017: retry_count ≤ max_retries.
- INV-018: every terminal task produced a notification attempt (outbox event or
  notification row), and no outbox event waits unclaimed long past its due time (a crash
  between the change and its delivery is replayed by the next poll; one that is not means
  no outbox worker runs).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from uuid import UUID

from fleet_core.db.database import Database, QueryClass, Tenant
from fleet_core.governor import Limits
from fleet_core.lifecycle import LIVE, SLOT_HOLDING, TERMINAL, TERMINAL_AUDIT_EVENT
from fleet_core.models import Tier
from fleet_core.runtime.handles import session_name
from fleet_core.runtime.local import LocalRuntime

ADMIN = Tenant.admin()


@dataclass(frozen=True)
class Violation:
    invariant: str
    detail: str
    task_id: UUID | None = None
    operator_id: str | None = None


def _values(statuses: frozenset[object]) -> list[str]:
    return sorted(str(s) for s in statuses)


async def verify_inv014(db: Database, limits: Limits, default_tier: Tier) -> list[Violation]:
    """Operators over their limit; the tier is the one an admin stored, else `default_tier`."""
    async with db.tx(ADMIN, QueryClass.LIST) as conn:
        rows = await conn.fetch(
            """SELECT t.operator_id, count(*) AS active, c.tier
                 FROM fleet_tasks t LEFT JOIN fleet_config c USING (operator_id)
                WHERE t.status = ANY($1::text[])
                GROUP BY t.operator_id, c.tier""",
            _values(SLOT_HOLDING),
        )
    out = []
    for r in rows:
        tier = Tier(r["tier"]) if r["tier"] else default_tier
        limit = limits.for_tier(tier)
        if r["active"] > limit:
            out.append(
                Violation(
                    "INV-014",
                    f"{r['active']} slot-holding tasks, limit {limit} (tier {tier.value})",
                    operator_id=r["operator_id"],
                )
            )
    return out


async def verify_inv015(db: Database, runtime: LocalRuntime) -> list[Violation]:
    sessions = set(await runtime.list_active())
    async with db.tx(ADMIN, QueryClass.LIST) as conn:
        rows = await conn.fetch(
            "SELECT id, operator_id, status, host_id FROM fleet_tasks "
            "WHERE id = ANY($1::uuid[]) OR (status = ANY($2::text[]) AND host_id = $3)",
            list(sessions),
            _values(LIVE),
            runtime.host_id,
        )
    known = {r["id"] for r in rows}
    out = [
        Violation("INV-015", f"agent session {session_name(tid)} has no task row", task_id=tid)
        for tid in sorted(sessions - known)
    ]
    for r in rows:
        if r["status"] in _values(LIVE) and r["id"] not in sessions:
            out.append(
                Violation(
                    "INV-015",
                    f"task is {r['status']} on {r['host_id']} but has no agent session",
                    task_id=r["id"],
                    operator_id=r["operator_id"],
                )
            )
    return out


async def verify_inv016(db: Database) -> list[Violation]:
    async with db.tx(ADMIN, QueryClass.LIST) as conn:
        rows = await conn.fetch(
            """SELECT t.id, t.operator_id, t.status FROM fleet_tasks t
                WHERE t.status = ANY($1::text[])
                  AND NOT EXISTS (SELECT 1 FROM fleet_audit a
                                   WHERE a.task_id = t.id AND a.to_status = t.status
                                     AND a.event_type = ($2::jsonb ->> t.status))""",
            _values(TERMINAL),
            {s.value: e for s, e in TERMINAL_AUDIT_EVENT.items()},
        )
    return [
        Violation("INV-016", f"{r['status']} without its audit entry", r["id"], r["operator_id"])
        for r in rows
    ]


async def verify_inv017(db: Database) -> list[Violation]:
    async with db.tx(ADMIN, QueryClass.LIST) as conn:
        rows = await conn.fetch(
            "SELECT id, operator_id, retry_count, max_retries FROM fleet_tasks "
            "WHERE retry_count > max_retries OR retry_count < 0"
        )
    return [
        Violation(
            "INV-017",
            f"retry_count {r['retry_count']} exceeds max_retries {r['max_retries']}",
            r["id"],
            r["operator_id"],
        )
        for r in rows
    ]


STUCK_AFTER_S = 300  # an event due this long ago and held by nobody: no worker delivers


async def verify_inv018(db: Database, stuck_after_s: float = STUCK_AFTER_S) -> list[Violation]:
    async with db.tx(ADMIN, QueryClass.LIST) as conn:
        stuck = await conn.fetch(
            """SELECT id, operator_id, event_type, payload ->> 'task_id' AS task_id
                 FROM fleet_outbox
                WHERE processed_at IS NULL AND dead_at IS NULL
                  AND next_attempt_at < now() - make_interval(secs => $1)
                  AND (locked_until IS NULL OR locked_until < now())
                ORDER BY created_at""",
            stuck_after_s,
        )
        rows = await conn.fetch(
            """SELECT t.id, t.operator_id, t.status FROM fleet_tasks t
                WHERE t.status = ANY($1::text[])
                  AND NOT EXISTS (SELECT 1 FROM fleet_outbox o
                                   WHERE o.dedup_key = t.id::text || ':' || t.status)
                  AND NOT EXISTS (SELECT 1 FROM fleet_notifications n WHERE n.task_id = t.id)""",
            _values(TERMINAL),
        )
    out = [
        Violation("INV-018", f"{r['status']} without a notification", r["id"], r["operator_id"])
        for r in rows
    ]
    out += [
        Violation(
            "INV-018",
            f"outbox event {r['event_type']} ({r['id']}) undelivered, due more than "
            f"{stuck_after_s:.0f}s ago and claimed by no worker",
            UUID(r["task_id"]) if r["task_id"] else None,
            r["operator_id"],
        )
        for r in stuck
    ]
    return out


async def verify_all(
    db: Database, runtime: LocalRuntime, limits: Limits, default_tier: Tier
) -> Mapping[str, list[Violation]]:
    return {
        "INV-014": await verify_inv014(db, limits, default_tier),
        "INV-015": await verify_inv015(db, runtime),
        "INV-016": await verify_inv016(db),
        "INV-017": await verify_inv017(db),
        "INV-018": await verify_inv018(db),
    }
