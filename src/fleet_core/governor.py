"""FleetGovernor: how many agents an operator (and the whole fleet) may run, enforced.

Two phases. `precheck` is a fast in-memory reject from a per-operator count cached for a few
seconds (never a cached tier or limit: INV-016 of the earlier code, "tier downgrade safe").
`admit` is the authoritative gate, one READ COMMITTED transaction: the operator's
`pg_advisory_xact_lock`, the counts under it (`fleet_admission_state`), the insert, commit.
Two gates for one operator serialise on the lock, so the second counts the first's row;
`COUNT(*) ... FOR UPDATE` (the earlier code) is refused by PostgreSQL, and REPEATABLE READ
would count from a snapshot taken before the lock and over-admit.

A spawn over the limit may wait in `fleet_spawn_queue` instead (it holds no slot). Queued
entries go first: a direct spawn is refused while an operator has entries waiting, and
`take_queued` turns the oldest entry into a task under the same lock, deleting the entry in
the same transaction, so each entry is admitted exactly once by whichever engine gets there.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet_core import pause, route_note, spawn_queue
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import SpawnDeniedError
from fleet_core.events import EventBus, EventType, FleetEvent
from fleet_core.lifecycle import SLOT_HOLDING, TaskStatus
from fleet_core.models import NewTask, TaskRecord, Tier
from fleet_core.notify.record import queue_event
from fleet_core.registry import TaskRegistry
from fleet_core.spawn_queue import Queued, QueueEntry

if TYPE_CHECKING:
    from fleet_core.db.database import Conn

DEFAULT_TIER_LIMITS: Mapping[Tier, int] = {
    Tier.OBSERVER: 0,
    Tier.PARTICIPANT: 0,
    Tier.BUILDER: 1,
    Tier.ARCHITECT: 3,
    Tier.SOVEREIGN: 10,
}
DEFAULT_GLOBAL_CAP = 25
CACHE_TTL_S = 5.0
CAPACITY_WARNING_RATIO = 0.8
_SLOTS = sorted(s.value for s in SLOT_HOLDING)
# Events after which an operator's cached count may be wrong.
_INVALIDATING = (
    EventType.COMPLETED,
    EventType.FAILED,
    EventType.CANCELLED,
    EventType.DELETED,
    EventType.STATUS_CHANGED,
    EventType.SPAWN_FAILED,
)


@dataclass(frozen=True)
class Limits:
    tiers: Mapping[Tier, int] = field(default_factory=lambda: dict(DEFAULT_TIER_LIMITS))
    global_cap: int | None = DEFAULT_GLOBAL_CAP

    def for_tier(self, tier: Tier) -> int:
        return self.tiers[tier]


@dataclass(frozen=True)
class Admitted:
    task: TaskRecord
    existing: bool = False  # the idempotency key matched a task made earlier


@dataclass(frozen=True)
class _State:
    active: int
    queued: int
    tier: Tier
    limit: int
    total: int | None
    paused: bool = False  # `fleet pause`: nothing is admitted


class Governor:
    def __init__(
        self,
        db: Database,
        limits: Limits | None = None,
        bus: EventBus | None = None,
        *,
        ttl_s: float = CACHE_TTL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.db = db
        self.limits = limits or Limits()
        self.bus = bus or EventBus()
        self.ttl_s = ttl_s
        self.clock = clock
        self._cache: dict[str, tuple[int, float]] = {}
        self._capacity_warned = False
        for event_type in _INVALIDATING:
            self.bus.subscribe(event_type, self._on_event)

    # -- the fast pre-check --------------------------------------------------------------------

    def _on_event(self, event: FleetEvent) -> None:
        if event.operator_id:
            self.invalidate(event.operator_id)

    def invalidate(self, operator_id: str) -> None:
        self._cache.pop(operator_id, None)

    def cached_active(self, operator_id: str) -> int | None:
        hit = self._cache.get(operator_id)
        if hit is None or self.clock() - hit[1] > self.ttl_s:
            return None
        return hit[0]

    def precheck(self, operator_id: str, tier: Tier) -> None:
        """Reject early when the caller's tier has no access or a fresh cached count is at the
        limit; otherwise let the gate decide."""
        limit = self.limits.for_tier(tier)
        active = self.cached_active(operator_id)
        if limit == 0 or (active is not None and active >= limit):
            raise self._denial(operator_id, tier, active or 0, limit, 0, None)

    # -- the gate ------------------------------------------------------------------------------

    async def admit(
        self,
        task: NewTask,
        *,
        operator_id: str,
        tier: Tier,
        queue: bool = False,
        request: Mapping[str, Any] | None = None,
    ) -> Admitted | Queued:
        """Insert `task` at proposed if the operator has a free slot (and the fleet is under
        its cap), else queue `request` when `queue`, else raise SpawnDeniedError."""
        tenant = Tenant.operator(operator_id)
        registry = TaskRegistry(self.db, tenant)
        async with self.db.tx(tenant) as conn:
            earlier = await self._existing(conn, operator_id, task.idempotency_key)
            if earlier is not None:
                return earlier
            state = await self._state(conn, operator_id, tier)
            reason = self._refusal(state)
            if reason is None:
                rec = await registry.create(task, conn=conn)
                await route_note.record(conn, operator_id=operator_id, task_id=rec.id,
                                        request=request)  # fmt: skip
            elif queue and reason != "no_fleet_access":
                queued = await spawn_queue.enqueue(conn, operator_id, state.tier, task, request)
            else:
                denial = self._denial(
                    operator_id, state.tier, state.active, state.limit, state.queued, reason
                )
        if reason is None:
            self._cache[operator_id] = (state.active + 1, self.clock())
            await self._capacity(None if state.total is None else state.total + 1)
            return Admitted(rec)
        self._cache[operator_id] = (state.active, self.clock())
        if queue and reason != "no_fleet_access":
            await self.bus.emit(
                EventType.QUEUED, operator_id=operator_id, position=queued.position, reason=reason
            )
            return queued
        await self.bus.emit(EventType.SPAWN_DENIED, operator_id=operator_id, **denial.to_dict())
        raise denial

    async def take_queued(
        self, operator_id: str, build: Callable[[QueueEntry], NewTask]
    ) -> tuple[QueueEntry, TaskRecord] | None:
        """Admit the operator's oldest queued spawn if a slot is free: the entry is deleted and
        its task inserted in one transaction under the operator's lock. None when the queue
        is empty or the operator is still at the limit."""
        tenant = Tenant.operator(operator_id)
        async with self.db.tx(tenant) as conn:
            counts = await self._lock_and_count(conn, operator_id)  # the lock comes first
            entry = await spawn_queue.oldest(conn, operator_id)
            if entry is None:
                return None
            state = self._with_tier(counts, entry.tier, await pause.read(conn) is not None)
            if self._refusal(state, queued_turn=True) is not None:
                return None
            deleted = await conn.fetchval(
                "DELETE FROM fleet_spawn_queue WHERE id = $1 RETURNING id", entry.id
            )
            if deleted is None:  # another engine took it while we waited for the lock
                return None
            rec = await TaskRegistry(self.db, tenant).create(build(entry), conn=conn)
            await route_note.record(conn, operator_id=operator_id, task_id=rec.id,
                                    request=entry.request)  # fmt: skip
            await queue_event(
                conn, operator_id=operator_id, event_type="spawn.admitted",
                payload={"task_id": str(rec.id), "branch": rec.branch, "queue_entry": entry.id,
                         "description": rec.description[:100],
                         "summary": f"queued spawn admitted as {rec.short_id}"},
                dedup_key=f"{rec.id}:admitted",
            )  # fmt: skip
        self._cache[operator_id] = (state.active + 1, self.clock())
        await self._capacity(None if state.total is None else state.total + 1)
        return entry, rec

    async def readmit(
        self,
        rec: TaskRecord,
        *,
        tier: Tier,
        count_failure: bool,
        update: Mapping[str, Any],
    ) -> TaskRecord | None:
        """A failed task takes a slot again for a retry, through the gate: under the operator's
        lock, if a slot is free, count the failure against the retry budget (INV-017's guard)
        and move failed/rejected → retrying, in one transaction. Returns the retrying task;
        None when the budget is spent (nothing changed). Raises SpawnDeniedError when no slot
        is free (a retry goes before queued spawns: it continues work already admitted), and
        StaleVersionError when `rec` is an old read (nothing changed then either)."""
        tenant = Tenant.operator(rec.operator_id)
        registry = TaskRegistry(self.db, tenant)
        async with self.db.tx(tenant) as conn:
            state = await self._state(conn, rec.operator_id, tier)
            reason = self._refusal(state, queued_turn=True)
            if reason is not None:
                raise self._denial(
                    rec.operator_id, state.tier, state.active, state.limit, 0, reason
                )
            if count_failure:
                counted = await registry.record_failure(
                    rec.id, rec.failure_context or {}, expected_version=rec.version, conn=conn
                )
                if counted is None:
                    return None
                rec = counted
            new = await registry.transition(
                rec.id,
                TaskStatus.RETRYING,
                expected_version=rec.version,
                update=dict(update),
                conn=conn,
            )
        self._cache[rec.operator_id] = (state.active + 1, self.clock())
        return new

    async def queued_operators(self) -> list[str]:
        return await spawn_queue.operators(self.db)

    async def queue(self, tenant: Tenant) -> list[QueueEntry]:
        """Queued spawns visible to `tenant`, oldest first."""
        return await spawn_queue.entries(self.db, tenant)

    async def stored_tier(self, operator_id: str) -> Tier | None:
        async with self.db.tx(Tenant.operator(operator_id)) as conn:
            value = await conn.fetchval(
                "SELECT tier FROM fleet_config WHERE operator_id = $1", operator_id
            )
        return Tier(value) if value else None

    async def set_tier(self, operator_id: str, tier: Tier | None) -> None:
        """Store the highest tier the operator may act with (None: whatever they claim)."""
        from fleet_core.auth.records import set_operator_tier  # the auth package only when used

        await set_operator_tier(self.db, operator_id, tier)
        self.invalidate(operator_id)

    # -- internals -----------------------------------------------------------------------------

    async def _state(self, conn: Conn, operator_id: str, claimed: Tier) -> _State:
        counts = await self._lock_and_count(conn, operator_id)
        return self._with_tier(counts, claimed, await pause.read(conn) is not None)

    async def _lock_and_count(self, conn: Conn, operator_id: str) -> Any:
        row = await conn.fetchrow(
            "SELECT * FROM fleet_admission_state($1, $2, $3)",
            operator_id,
            _SLOTS,
            self.limits.global_cap is not None,
        )
        assert row is not None
        return row

    def _with_tier(self, counts: Any, claimed: Tier, paused: bool = False) -> _State:
        """The tier that binds is the lower of the one claimed and the one stored by an admin,
        read in this transaction (a downgrade counts at once)."""
        tier = claimed
        stored = counts["stored_tier"]
        if stored is not None and Tier(stored).rank < claimed.rank:
            tier = Tier(stored)
        total = None if counts["total"] is None else int(counts["total"])
        return _State(
            int(counts["active"]),
            int(counts["queued"]),
            tier,
            self.limits.for_tier(tier),
            total,
            paused,
        )

    def _refusal(self, state: _State, *, queued_turn: bool = False) -> str | None:
        if state.limit == 0:
            return "no_fleet_access"
        if state.paused:
            return "paused"
        if state.active >= state.limit:
            return "tier_limit"
        cap = self.limits.global_cap
        if cap is not None and state.total is not None and state.total >= cap:
            return "global_cap"
        if state.queued and not queued_turn:
            return "queued_ahead"
        return None

    async def _existing(
        self, conn: Conn, operator_id: str, key: str | None
    ) -> Admitted | Queued | None:
        if key is None:
            return None
        row = await conn.fetchrow(
            "SELECT * FROM fleet_tasks WHERE operator_id = $1 AND idempotency_key = $2",
            operator_id,
            key,
        )
        if row is not None:
            return Admitted(TaskRecord.model_validate(dict(row)), existing=True)
        return await spawn_queue.by_key(conn, operator_id, key)

    def _denial(
        self, operator_id: str, tier: Tier, active: int, limit: int, queued: int, reason: str | None
    ) -> SpawnDeniedError:
        reason = reason or ("no_fleet_access" if limit == 0 else "tier_limit")
        if reason == "no_fleet_access":
            hint = (
                f"tier {tier.value} has no fleet access; {_first_tier_with_access(self)} can spawn"
            )
        elif reason == "global_cap":
            hint = (
                f"the fleet is at its global cap of {self.limits.global_cap} agents; wait with "
                "--queue, or raise global_cap"
            )
        elif reason == "paused":
            hint = (
                "the fleet is paused (`fleet resume` lifts it); with --queue the spawn waits "
                "in the queue until then"
            )
        elif reason == "queued_ahead":
            hint = f"{queued} queued spawn(s) wait ahead of this one; use --queue to wait in line"
        else:
            hint = "stop or finish a task, or wait for a slot with --queue"
            better = _next_tier_with_more(self, tier)
            if better is not None:
                hint += f"; tier {better[0].value} allows {better[1]}"
        return SpawnDeniedError(
            operator_id=operator_id,
            tier=tier.value,
            active=active,
            limit=limit,
            reason=reason,
            hint=hint,
            queued_ahead=queued,
        )

    async def _capacity(self, total: int | None) -> None:
        cap = self.limits.global_cap
        if cap is None or total is None:
            return
        high = total >= CAPACITY_WARNING_RATIO * cap
        if high and not self._capacity_warned:
            self._capacity_warned = True
            await self.bus.emit(EventType.CAPACITY_WARNING, active=total, cap=cap)
        elif not high and self._capacity_warned:
            self._capacity_warned = False
            await self.bus.emit(EventType.CAPACITY_RESTORED, active=total, cap=cap)

    async def observe_capacity(self) -> int:
        """Recount the fleet (after tasks end) so a capacity warning can be lifted."""
        async with self.db.tx(Tenant.admin()) as conn:
            total = int(await conn.fetchval("SELECT fleet_active_total($1)", _SLOTS))
        await self._capacity(total)
        return total


def _first_tier_with_access(gov: Governor) -> str:
    for tier in Tier:
        if gov.limits.for_tier(tier) > 0:
            return f"tier {tier.value} or higher"
    return "no tier"


def _next_tier_with_more(gov: Governor, tier: Tier) -> tuple[Tier, int] | None:
    limit = gov.limits.for_tier(tier)
    for other in Tier:
        if other.rank > tier.rank and gov.limits.for_tier(other) > limit:
            return other, gov.limits.for_tier(other)
    return None
