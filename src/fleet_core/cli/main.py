"""Entry point of the `fleet` command. The verbs are listed in `verbs.py`; each one's module is
imported only when that verb runs."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from fleet_core.cli.parsing import build_parser, find_verb
from fleet_core.cli.runner import finish, guarded
from fleet_core.errors import BadInputError


def dispatch(argv: Sequence[str]) -> int:
    parser, command = build_parser(find_verb(argv))
    args = parser.parse_args(argv)
    if command is not None and command.early is not None:
        code = command.early(args)
        if code is not None:
            return code
    from fleet_core.config import load_settings
    from fleet_core.logs import setup_file_logging

    settings = load_settings()
    setup_file_logging(settings.log_dir, settings.log_level)
    if command is not None:
        return command.run(args, settings)
    if args.headless:
        from fleet_core.cli.runner import run_async
        from fleet_core.headless import serve

        if not 1 <= args.port <= 65535:
            raise BadInputError("--port", "must be between 1 and 65535")
        run_async(lambda: serve(settings, args.host, args.port))
        return 0
    from fleet_console.run import run_console  # the console's toolkit only when needed

    return run_console(settings)


def main(argv: Sequence[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    return finish(guarded(lambda: dispatch(words), as_json="--json" in words))


if __name__ == "__main__":
    sys.exit(main())
