"""`fleet operator tier NAME TIER | list`: the tier an admin stores for an operator, the highest
its API tokens (and its spawns and retries) act with, whatever a token claims."""

from __future__ import annotations

import argparse

from fleet_core.auth import records
from fleet_core.cli.auth_cmds import _require_admin
from fleet_core.cli.context import opened
from fleet_core.cli.output import dumps, table
from fleet_core.cli.runner import run_async
from fleet_core.cli.verbs import Command
from fleet_core.config import Settings
from fleet_core.errors import BadInputError
from fleet_core.models import Tier

NONE = "none"


def arguments(op: argparse.ArgumentParser) -> None:
    verbs = op.add_subparsers(dest="operator_verb", required=True, metavar="VERB")
    tier = verbs.add_parser("tier", help="store the highest tier an operator may act with")
    tier.add_argument("name", metavar="NAME", help="the operator (a token's subject)")
    tier.add_argument("tier", metavar="TIER",
                      help=f"{', '.join(Tier)}, or {NONE} to remove it")  # fmt: skip
    tier.add_argument("--json", action="store_true")
    ls = verbs.add_parser("list", help="every operator with a stored tier")
    ls.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.operator_verb == "tier":
        return set_tier(args, settings)
    return list_tiers(args, settings)


def parse_tier(text: str) -> Tier | None:
    if text == NONE:
        return None
    try:
        return Tier(text)
    except ValueError:
        known = ", ".join(Tier)
        raise BadInputError("TIER", f"{text!r} is not one of {known}, or {NONE}") from None


def set_tier(args: argparse.Namespace, settings: Settings) -> int:
    _require_admin(settings, "storing an operator's tier")
    records.check_operator(args.name, "NAME")
    tier = parse_tier(args.tier)

    async def go() -> None:
        async with opened(settings) as db:
            await records.set_operator_tier(db, args.name, tier)

    run_async(go)
    shown = tier.value if tier else None
    if args.json:
        print(dumps({"operator": args.name, "tier": shown}))
    elif tier is None:
        print(f"{args.name}: no stored tier (its tokens' tiers apply)")
    else:
        print(f"{args.name}: acts with tier {shown} at most "
              f"(API servers apply it within {settings.auth_cache_seconds:g} s)")  # fmt: skip
    return 0


def list_tiers(args: argparse.Namespace, settings: Settings) -> int:
    _require_admin(settings, "listing operators' tiers")

    async def go() -> dict[str, Tier]:
        async with opened(settings) as db:
            return await records.operator_tiers(db)

    tiers = run_async(go)
    if args.json:
        print(dumps([{"operator": k, "tier": v.value} for k, v in tiers.items()]))
    elif not tiers:
        print("No stored tiers: every operator acts with its token's (or config's) tier.")
    else:
        print(table([(k, v.value) for k, v in tiers.items()], ("OPERATOR", "TIER")))
    return 0


COMMANDS = {"operator": Command(arguments, run)}
