"""Entry point of the `fleet` command."""

from __future__ import annotations

import argparse
import json
import sys

from fleet_core import __version__
from fleet_core.cli import agent_cmds, auth_cmds, db_cmd, repo_cmds, task_cmds
from fleet_core.cli.runner import guarded, run_async
from fleet_core.config import config_path, load_settings
from fleet_core.errors import BadInputError
from fleet_core.logs import setup_file_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fleet", description="Operator console for a fleet of AI coding agents."
    )
    parser.add_argument("--version", action="version", version=f"fleet {__version__}")
    parser.add_argument("--headless", action="store_true", help="engine + HTTP API, no console")
    parser.add_argument("--host", default="127.0.0.1", help="with --headless (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="with --headless (default 8765)")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    agent_cmds.add_parsers(sub)
    task_cmds.add_parsers(sub)
    auth_cmds.add_parsers(sub)
    repo_cmds.add_parsers(sub)
    db_cmd.add_parser(sub)
    cfg = sub.add_parser("config", help="show the settings in effect, or the file's path")
    cfg_verbs = cfg.add_subparsers(dest="config_verb", required=True, metavar="VERB")
    cfg_verbs.add_parser("show", help="every setting in effect (passwords masked)")
    cfg_verbs.add_parser("path", help="the path of fleet.toml")
    return parser


def dispatch(args: argparse.Namespace) -> int:
    if args.verb == "config" and args.config_verb == "path":
        print(config_path())
        return 0
    settings = load_settings()
    setup_file_logging(settings.log_dir, settings.log_level)
    if args.verb == "config":
        print(json.dumps(settings.redacted(), indent=2))
        return 0
    if args.verb == "db":
        return db_cmd.run(args, settings)
    if args.verb in ("token", "keys"):
        return auth_cmds.run(args, settings)
    if args.verb == "repo":
        return repo_cmds.run(args, settings)
    if args.verb == "show":
        return task_cmds.show(args, settings)
    verbs = {
        "spawn": agent_cmds.spawn,
        "stop": agent_cmds.stop,
        "delete": agent_cmds.delete,
        "logs": agent_cmds.logs,
        "attach": agent_cmds.attach,
        "retry": agent_cmds.retry,
        "merge": agent_cmds.merge,
        "demo": agent_cmds.demo,
    }
    if args.verb in verbs:
        return verbs[args.verb](args, settings)
    if args.verb is None and args.headless:
        from fleet_core.headless import serve

        if not 1 <= args.port <= 65535:
            raise BadInputError("--port", "must be between 1 and 65535")
        run_async(lambda: serve(settings, args.host, args.port))
        return 0
    if args.verb is None:
        from fleet_console.run import run_console  # the console's toolkit only when needed

        return run_console(settings)
    return task_cmds.status(args, settings)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(lambda: dispatch(args), as_json=bool(getattr(args, "json", False)))


if __name__ == "__main__":
    sys.exit(main())
