"""The fleet at a glance, for the console's governor panel and the API's health: slots used per
operator against their limits, the fleet-wide count and cap, the queue, the monitor's health
and the forges' budgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet_core import pause
from fleet_core.db.database import Tenant
from fleet_core.lifecycle import SLOT_HOLDING
from fleet_core.models import Tier
from fleet_core.notify.status import DeliveryHealth, delivery_health

if TYPE_CHECKING:
    from fleet_core.conductor import Actor, Conductor
    from fleet_core.monitor import Monitor


@dataclass(frozen=True)
class OperatorLoad:
    operator_id: str
    tier: Tier
    active: int
    limit: int

    @property
    def headroom(self) -> int:
        return max(0, self.limit - self.active)


@dataclass(frozen=True)
class Overview:
    operators: list[OperatorLoad]
    total_active: int
    global_cap: int | None
    queued: int
    monitor: dict[str, Any] = field(default_factory=dict)
    forges: dict[str, dict[str, Any]] = field(default_factory=dict)
    unsandboxed: str | None = None  # why agents run without a sandbox here (None: they don't)
    deliveries: DeliveryHealth | None = None  # the notifications the viewer may see
    paused: str | None = None  # `fleet pause`: who and since when (None: not paused)
    forge_errors: dict[str, str] = field(default_factory=dict)  # repository → what it says
    containers: str | None = None  # container mode's daemon when it does not answer


async def fleet_overview(
    conductor: Conductor, actor: Actor, monitor: Monitor | None = None
) -> Overview:
    """What `actor` may see: every operator for an admin (or the sovereign tier, as `--all`),
    else only themselves; the fleet-wide count is always shown (it is only a number)."""
    everyone = actor.admin or actor.tier is Tier.SOVEREIGN
    tenant = Tenant.admin() if everyone else actor.tenant
    slots = sorted(s.value for s in SLOT_HOLDING)
    async with conductor.db.tx(tenant) as conn:
        rows = await conn.fetch(
            """SELECT t.operator_id, count(*) AS active, max(c.tier) AS tier
                 FROM fleet_tasks t LEFT JOIN fleet_config c USING (operator_id)
                WHERE t.status = ANY($1::text[])
                GROUP BY t.operator_id ORDER BY t.operator_id""",
            slots,
        )
        total = int(await conn.fetchval("SELECT fleet_active_total($1)", slots))
        queued = int(await conn.fetchval("SELECT count(*) FROM fleet_spawn_queue"))
        paused = await pause.read(conn)
    deliveries = await delivery_health(conductor.db, tenant)
    limits = conductor.governor.limits
    loads = []
    for r in rows:
        tier = Tier(r["tier"]) if r["tier"] else conductor.default_tier
        if r["operator_id"] == actor.operator_id and not r["tier"]:
            tier = actor.tier
        loads.append(OperatorLoad(r["operator_id"], tier, int(r["active"]), limits.for_tier(tier)))
    if not any(load.operator_id == actor.operator_id for load in loads):
        limit = limits.for_tier(actor.tier)
        loads.insert(0, OperatorLoad(actor.operator_id, actor.tier, 0, limit))
    return Overview(
        operators=loads,
        total_active=total,
        global_cap=limits.global_cap,
        queued=queued,
        monitor=monitor.health() if monitor else {},
        forges=conductor.forges.health(),
        unsandboxed=conductor.runtime.unsandboxed_reason,
        deliveries=deliveries,
        paused=paused.line() if paused else None,
        forge_errors=conductor.forges.problems.problems(),
        containers=await conductor.runtime.health(always=conductor.uses_containers),
    )
