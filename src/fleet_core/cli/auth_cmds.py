"""`fleet token issue | list | revoke` and `fleet keys rotate | list`: the API's tokens and
signing keys."""

from __future__ import annotations

import argparse
import re
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from fleet_core.cli.output import dumps, table
from fleet_core.cli.verbs import Command
from fleet_core.errors import BadInputError, DeniedError

if TYPE_CHECKING:
    from fleet_core.auth.keys import KeyInfo, KeyStore
    from fleet_core.config import Settings

T = TypeVar("T")
DURATION_RE = re.compile(r"^\s*(\d{1,7})\s*([smhd])\s*$")
UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
# issue_token's field → the flag a user typed.
FLAGS = {"operator": "--operator", "tier": "--tier", "ttl": "--ttl", "overlap": "--overlap",
         "jti": "JTI"}  # fmt: skip


def token_arguments(tok: argparse.ArgumentParser) -> None:
    from fleet_core.models import Tier

    tok_verbs = tok.add_subparsers(dest="token_verb", required=True, metavar="VERB")
    issue = tok_verbs.add_parser("issue", help="print a signed token for an operator")
    issue.add_argument("--operator", required=True, help="the operator the token acts as")
    issue.add_argument("--tier", required=True, choices=[t.value for t in Tier])
    issue.add_argument(
        "--ttl",
        default="1h",
        help="lifetime like 30m, 1h, 7d (default 1h; at most token_max_ttl_hours)",
    )
    tls = tok_verbs.add_parser("list", help="every token issued, newest first, with its state")
    tls.add_argument("--operator", help="only this operator's tokens")
    tls.add_argument("--json", action="store_true")
    rev = tok_verbs.add_parser("revoke", help="refuse a token from now on (every server, < 1 min)")
    rev.add_argument("jti", metavar="JTI", help="the token's id, as `fleet token list` shows it")
    rev.add_argument("--json", action="store_true")


def keys_arguments(keys: argparse.ArgumentParser) -> None:
    keys_verbs = keys.add_subparsers(dest="keys_verb", required=True, metavar="VERB")
    rot = keys_verbs.add_parser("rotate", help="start signing with a new key")
    rot.add_argument("--overlap", default="24h",
                     help="how long the old key still verifies (default 24h)")  # fmt: skip
    rot.add_argument("--json", action="store_true")
    ls = keys_verbs.add_parser("list", help="every stored key and its state")
    ls.add_argument("--json", action="store_true")


def parse_duration(text: str, flag: str) -> timedelta:
    """`90s`, `30m`, `1h`, `7d` → a timedelta; anything else is bad input naming `flag`."""
    match = DURATION_RE.match(text)
    if match is None:
        raise BadInputError(flag, f"{text!r} is not a duration like 30m, 1h or 7d")
    try:
        return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})
    except OverflowError:
        raise BadInputError(flag, f"{text!r} is too long") from None


def _require_admin(settings: Settings, what: str) -> None:
    from fleet_core.cli.context import ADMIN_TIER

    if not settings.tier.at_least(ADMIN_TIER):
        raise DeniedError(
            f"{what} needs tier {ADMIN_TIER.value}; {settings.operator} is {settings.tier.value}"
        )


def with_store(settings: Settings, fn: Callable[[KeyStore], Awaitable[T]]) -> T:
    from fleet_core.auth.keys import KeyStore
    from fleet_core.cli.context import opened
    from fleet_core.cli.runner import run_async

    master = KeyStore.load_master_key(settings)

    async def go() -> T:
        async with opened(settings) as db:
            try:
                return await fn(KeyStore(db, master))
            except BadInputError as exc:  # name the flag the user typed
                raise BadInputError(FLAGS.get(exc.field, exc.field), exc.message) from None

    return run_async(go)


def key_json(info: KeyInfo) -> dict[str, object]:
    def iso(t: datetime | None) -> str | None:
        return t.astimezone(UTC).isoformat(timespec="seconds") if t else None

    return {
        "kid": info.kid,
        "state": info.state,
        "created_at": iso(info.created_at),
        "not_before": iso(info.not_before),
        "signing_until": iso(info.signing_until),
        "verify_until": iso(info.verify_until),
    }


def run(args: argparse.Namespace, settings: Settings) -> int:
    if args.verb == "token":
        verbs = {"issue": token_issue, "list": token_list, "revoke": token_revoke}
        return verbs[args.token_verb](args, settings)
    if args.keys_verb == "rotate":
        return keys_rotate(args, settings)
    return keys_list(args, settings)


def token_issue(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.auth.tokens import issue_token
    from fleet_core.models import Tier

    _require_admin(settings, "issuing tokens")
    ttl = parse_duration(args.ttl, "--ttl")
    tier = Tier(args.tier)
    max_ttl = timedelta(hours=settings.token_max_ttl_hours)
    print(with_store(settings, lambda s: issue_token(s, args.operator, tier, ttl, max_ttl=max_ttl)))
    return 0


def token_list(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.auth import records

    _require_admin(settings, "listing tokens")
    infos = with_store(settings, lambda s: records.list_tokens(s.db, operator_id=args.operator))
    if args.json:
        print(dumps([i.to_dict() for i in infos]))
        return 0
    if not infos:
        print("No tokens issued yet.")
        return 0
    rows = [
        (i.jti, i.operator_id, i.tier.value, i.state, str(d["issued_at"]), str(d["expires_at"]))
        for i in infos
        for d in [i.to_dict()]
    ]
    print(table(rows, ("JTI", "OPERATOR", "TIER", "STATE", "ISSUED", "EXPIRES")))
    return 0


def token_revoke(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.auth import records

    _require_admin(settings, "revoking tokens")
    jti = records.check_jti(args.jti, "JTI")  # bad input before the database is opened
    info = with_store(settings, lambda s: records.revoke_token(s.db, jti))
    if args.json:
        print(dumps(info.to_dict()))
        return 0
    print(f"revoked {info.jti} ({info.operator_id}, {info.tier.value}); "
          f"every server refuses it within {settings.auth_cache_seconds:g} s")  # fmt: skip
    return 0


def keys_rotate(args: argparse.Namespace, settings: Settings) -> int:
    _require_admin(settings, "rotating signing keys")
    overlap = parse_duration(args.overlap, "--overlap")

    async def go(store: KeyStore) -> tuple[KeyInfo, list[KeyInfo]]:
        return await store.rotate(overlap), await store.keys()

    new, every = with_store(settings, go)
    if args.json:
        print(dumps({"signing": key_json(new), "keys": [key_json(k) for k in every]}))
        return 0
    print(f"now signing with {new.kid}")
    for k in every:
        if k.state == "verifying" and k.verify_until:
            print(f"  {k.kid} still verifies until {k.verify_until.isoformat(timespec='seconds')}")
    return 0


def keys_list(args: argparse.Namespace, settings: Settings) -> int:
    _require_admin(settings, "listing signing keys")
    every = with_store(settings, lambda s: s.keys())
    if args.json:
        print(dumps([key_json(k) for k in every]))
        return 0
    if not every:
        print("No signing keys yet (the first token issued creates one).")
        return 0
    rows = []
    for k in every:
        doc = key_json(k)
        times = (doc["created_at"], doc["not_before"], doc["signing_until"], doc["verify_until"])
        rows.append((k.kid, k.state, *(str(t) if t else "-" for t in times)))
    print(table(rows, HEADER))
    return 0


HEADER = ("KID", "STATE", "CREATED", "NOT BEFORE", "SIGNING UNTIL", "VERIFY UNTIL")


COMMANDS = {
    "token": Command(token_arguments, run),
    "keys": Command(keys_arguments, run),
}
