"""`fleet db migrate | status | down N | url | start | stop`."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import TYPE_CHECKING

import asyncpg

from fleet_core.cli.verbs import Command
from fleet_core.db.connect import cluster_for, resolve_target
from fleet_core.db.migrate import Migrator
from fleet_core.errors import BadInputError, DatabaseError

if TYPE_CHECKING:
    from fleet_core.config import Settings


def arguments(db: argparse.ArgumentParser) -> None:
    verbs = db.add_subparsers(dest="db_verb", required=True, metavar="VERB")
    verbs.add_parser("migrate", help="apply pending migrations")
    st = verbs.add_parser("status", help="server and migration status")
    st.add_argument("--json", action="store_true")
    down = verbs.add_parser("down", help="revert the newest N migrations")
    down.add_argument("steps", type=int, metavar="N")
    url = verbs.add_parser("url", help="print the connection URL (for psql)")
    who = url.add_mutually_exclusive_group()
    who.add_argument("--engine", action="store_true", help="the engine's restricted role")
    who.add_argument(
        "--superuser", action="store_true", help="the embedded cluster's superuser (dumps)"
    )
    verbs.add_parser("start", help="start the embedded server")
    verbs.add_parser("stop", help="stop the embedded server")


async def _with_migrator(owner_dsn: str, verb: str, steps: int = 0) -> list[str]:
    try:
        conn = await asyncpg.connect(owner_dsn, timeout=10)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        raise DatabaseError(f"cannot connect as the schema owner: {exc}") from exc
    try:
        mig = Migrator(conn)
        if verb == "migrate":
            return [m.filename for m in await mig.migrate()]
        if verb == "down":
            return [m.filename for m in await mig.down(steps)]
        return [
            f"{s.version:04d}_{s.name}  {s.state}"
            + (f"  {s.applied_at.isoformat(timespec='seconds')}" if s.applied_at else "")
            for s in await mig.status()
        ]
    finally:
        await conn.close()


def run(args: argparse.Namespace, settings: Settings) -> int:
    verb = args.db_verb
    if verb == "stop":
        if settings.database_url:
            raise BadInputError("db stop", "FLEET_DATABASE_URL is set; fleet does not run it")
        stopped = cluster_for(settings).stop()
        print("stopped" if stopped else "not running")
        return 0
    if verb == "url" and args.superuser and settings.database_url:
        raise BadInputError("--superuser", "only for the embedded cluster")
    if verb == "down" and args.steps < 1:
        raise BadInputError("N", "must be 1 or more")
    target = asyncio.run(resolve_target(settings))
    if verb == "start":
        print(f"running ({target.mode})")
        return 0
    if verb == "url":
        if args.superuser:
            print(cluster_for(settings).info.dsn(database="fleet"))
        else:
            print(target.engine_dsn if args.engine else target.owner_dsn)
        return 0
    lines = asyncio.run(_with_migrator(target.owner_dsn, verb, getattr(args, "steps", 0)))
    if verb == "status":
        server = "external (FLEET_DATABASE_URL)"
        if target.mode == "embedded":
            cluster = cluster_for(settings)
            server = (
                f"embedded, {cluster.status()}, PostgreSQL {cluster.bins.major}, {cluster.root}"
            )
        if args.json:
            print(json.dumps({"server": server, "migrations": lines}))
        else:
            print(f"server: {server}")
            print("\n".join(lines) or "no migrations")
        return 0
    done = "applied" if verb == "migrate" else "reverted"
    print("\n".join(f"{done} {name}" for name in lines) or "nothing to do")
    return 0


COMMANDS = {"db": Command(arguments, run)}
