"""`fleet repo add | list | grant | revoke | remove`: the repositories agents may work in and
who may use them. Everything but `list` needs the admin tier locally (like `fleet token`)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from fleet_core.cli.context import ADMIN_TIER, local_tenant, opened
from fleet_core.cli.output import age, dumps, table
from fleet_core.cli.runner import run_async
from fleet_core.cli.verbs import Command
from fleet_core.config import Settings
from fleet_core.errors import BadInputError, DeniedError
from fleet_core.repositories import NAME_RE, Repositories, Repository

T = TypeVar("T")
# Repositories' field → the flag or argument a user typed.
FLAGS = {"path": "PATH", "name": "--name", "operator": "OPERATOR"}
HEADER = ("NAME", "PATH", "OPERATORS", "ADDED BY", "AGE")


def arguments(repo: argparse.ArgumentParser) -> None:
    verbs = repo.add_subparsers(dest="repo_verb", required=True, metavar="VERB")
    add = verbs.add_parser("add", help="register a git work tree (admin)")
    add.add_argument("path", metavar="PATH", help="the work tree's top directory")
    add.add_argument("--name", help="its name (default: the directory's name)")
    add.add_argument("--grant", action="append", default=[], metavar="OPERATOR",
                     help="an operator who may use it (repeatable)")  # fmt: skip
    add.add_argument("--json", action="store_true")
    ls = verbs.add_parser("list", help="the repositories granted to you")
    ls.add_argument("--all", action="store_true", help="every repository (admin)")
    ls.add_argument("--json", action="store_true")
    for verb, text in (("grant", "let an operator use a repository (admin)"),
                       ("revoke", "take a repository away from an operator (admin)")):  # fmt: skip
        p = verbs.add_parser(verb, help=text)
        p.add_argument("name", metavar="NAME")
        p.add_argument("operator", metavar="OPERATOR")
        p.add_argument("--json", action="store_true")
    rm = verbs.add_parser("remove", help="forget a repository and its grants, not its files")
    rm.add_argument("name", metavar="NAME")
    rm.add_argument("--json", action="store_true")


def repo_json(repo: Repository) -> dict[str, Any]:
    doc: dict[str, Any] = repo.model_dump(mode="json")
    return doc


def _require_admin(settings: Settings, what: str) -> None:
    if not settings.tier.at_least(ADMIN_TIER):
        raise DeniedError(
            f"{what} needs tier {ADMIN_TIER.value}; {settings.operator} is {settings.tier.value}"
        )


def with_repositories(settings: Settings, fn: Callable[[Repositories], Awaitable[T]]) -> T:
    async def go() -> T:
        async with opened(settings) as db:
            try:
                return await fn(Repositories(db))
            except BadInputError as exc:  # name what the user typed
                raise BadInputError(FLAGS.get(exc.field, exc.field), exc.message) from None

    return run_async(go)


def run(args: argparse.Namespace, settings: Settings) -> int:
    verbs = {"add": add, "list": list_, "grant": grant, "revoke": revoke, "remove": remove}
    return verbs[args.repo_verb](args, settings)


def add(args: argparse.Namespace, settings: Settings) -> int:
    _require_admin(settings, "adding a repository")
    path = str(Path(args.path).expanduser().absolute())
    repo = with_repositories(
        settings, lambda r: r.add(path, by=settings.operator, name=args.name, grants=args.grant)
    )
    if args.json:
        print(dumps(repo_json(repo)))
        return 0
    who = ", ".join(repo.operators) or "nobody yet (fleet repo grant NAME OPERATOR)"
    print(f"added repository {repo.name}: {repo.path}\n  granted to {who}")
    return 0


def list_(args: argparse.Namespace, settings: Settings) -> int:
    tenant = local_tenant(settings, all_operators=args.all)
    repos = with_repositories(settings, lambda r: r.list_for(tenant))
    if args.json:
        print(dumps([repo_json(r) for r in repos]))
        return 0
    if not repos:
        print(f"No repositories are granted to {settings.operator} yet. `fleet spawn` in a "
              "repository you own registers it; an admin can run `fleet repo add PATH --grant "
              f"{settings.operator}`.")  # fmt: skip
        return 0
    rows = [(r.name, r.path, ",".join(r.operators) or "-", r.created_by, age(r.created_at))
            for r in repos]  # fmt: skip
    print(table(rows, HEADER))
    return 0


def _name(text: str) -> str:
    if not NAME_RE.match(text):
        raise BadInputError("NAME", f"{text!r} is not a repository name (see fleet repo list)")
    return text


def grant(args: argparse.Namespace, settings: Settings) -> int:
    _require_admin(settings, "granting a repository")
    name = _name(args.name)
    repo, new = with_repositories(
        settings, lambda r: r.grant(name, args.operator, by=settings.operator)
    )
    text = "granted" if new else "already granted"
    print(dumps(repo_json(repo)) if args.json else f"{text}: {repo.name} to {args.operator}")
    return 0


def revoke(args: argparse.Namespace, settings: Settings) -> int:
    _require_admin(settings, "revoking a repository")
    name = _name(args.name)
    repo, had = with_repositories(settings, lambda r: r.revoke(name, args.operator))
    text = f"revoked: {repo.name} from {args.operator}" if had else (
        f"{args.operator} had no grant on {repo.name}")  # fmt: skip
    print(dumps(repo_json(repo)) if args.json else text)
    return 0


def remove(args: argparse.Namespace, settings: Settings) -> int:
    _require_admin(settings, "removing a repository")
    name = _name(args.name)
    repo = with_repositories(settings, lambda r: r.remove(name))
    text = f"removed repository {repo.name} ({repo.path}; its files are untouched)"
    print(dumps(repo_json(repo)) if args.json else text)
    return 0


def registered_notice(repo: Repository, operator: str, *, as_json: bool) -> None:
    """Said once, on stderr, when `fleet spawn` registers a repository by itself."""
    if as_json:
        doc = {"notice": "repository_registered", "operator": operator, **repo_json(repo)}
        print(json.dumps(doc), file=sys.stderr)
        return
    print(f"fleet: registered {repo.path} as repository {repo.name!r} for {operator} "
          "(once; see fleet repo list)", file=sys.stderr)  # fmt: skip


COMMANDS = {"repo": Command(arguments, run)}
