"""`fleet pause` / `fleet resume`: a fleet-wide switch that stops admissions, retries and
queued spawns (running agents continue). The governor reads it in the admission transaction
(`fleet_switches`), so every engine on every host obeys it at once."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from fleet_core.db.database import Tenant
from fleet_core.errors import BadInputError

if TYPE_CHECKING:
    from fleet_core.db.database import Conn, Database

PAUSED = "paused"
MAX_REASON = 500


@dataclass(frozen=True)
class Pause:
    by: str
    reason: str
    at: datetime

    def line(self) -> str:
        why = f": {self.reason}" if self.reason else ""
        return f"paused by {self.by} since {self.at:%Y-%m-%d %H:%M} UTC{why}"

    def to_dict(self) -> dict[str, Any]:
        return {"by": self.by, "reason": self.reason, "at": self.at.isoformat()}


async def read(conn: Conn) -> Pause | None:
    row = await conn.fetchrow(
        "SELECT set_by, reason, set_at FROM fleet_switches WHERE name = $1", PAUSED
    )
    return None if row is None else Pause(row["set_by"], row["reason"], row["set_at"])


async def current(db: Database) -> Pause | None:
    """The pause in effect; None too on a schema from before the switch (read-only verbs do
    not migrate: `fleet status` must not fail for it)."""
    import asyncpg

    try:
        async with db.tx(Tenant.admin()) as conn:
            return await read(conn)
    except asyncpg.UndefinedTableError:
        return None


async def pause(db: Database, by: str, reason: str = "") -> tuple[Pause, bool]:
    """Set the switch (an admin's act); (the pause in effect, whether it was set just now)."""
    if len(reason) > MAX_REASON:
        raise BadInputError("reason", f"at most {MAX_REASON} characters")
    async with db.tx(Tenant.operator(by, admin=True)) as conn:
        inserted = await conn.fetchval(
            "INSERT INTO fleet_switches (name, set_by, reason) VALUES ($1, $2, $3) "
            "ON CONFLICT (name) DO NOTHING RETURNING name",
            PAUSED, by, reason,
        )  # fmt: skip
        now = await read(conn)
    assert now is not None
    return now, inserted is not None


async def resume(db: Database, by: str) -> Pause | None:
    """Clear the switch; the pause that was lifted (None when the fleet was not paused)."""
    async with db.tx(Tenant.operator(by, admin=True)) as conn:
        was = await read(conn)
        await conn.execute("DELETE FROM fleet_switches WHERE name = $1", PAUSED)
    return was
