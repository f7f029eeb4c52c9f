"""`fleet demo [--headless] [--yes]`: the whole lifecycle offline, with demo agents. The demo
removes only the tasks earlier demos made; it asks before removing tasks spawned by hand on
its sample repository (`--yes` agrees in advance)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from fleet_core.cli.verbs import Command

if TYPE_CHECKING:
    from fleet_core.config import Settings


def arguments(dm: argparse.ArgumentParser) -> None:
    dm.add_argument("--headless", action="store_true", help="print transitions, no console")
    dm.add_argument(
        "--yes",
        action="store_true",
        help="also remove tasks not made by a demo that use the demo's sample repository",
    )
    dm.add_argument(
        "--runtime",
        choices=["local", "container"],
        help="where the demo's agents run (container: the demo image is built first if missing)",
    )


def _container_ready(settings: Settings) -> None:
    """The demo agent's image on the daemon (and the base image, made when missing)."""
    from fleet_core.cli.runner import run_async
    from fleet_core.models import AgentType
    from fleet_core.runtime import docker_client, docker_images

    async def build() -> None:
        async with docker_client.client(settings.container.docker_host) as docker:
            tag = settings.container.images.get("demo") or docker_images.image_tag(AgentType.DEMO)
            await docker_images.ensure_base(docker, progress=print)
            await docker_images.build(docker, AgentType.DEMO, tag=tag)
            print(f"fleet demo: agents run in containers of {tag}")

    run_async(build)


def _agreed(settings: Settings, yes: bool) -> bool:
    """Whether the demo may remove the tasks on its sample that no demo made: none there, or
    --yes, or the operator says so at the prompt. Refuses (exit 5, nothing touched) when
    there are some and nobody can be asked."""
    from fleet_core.cli.acting import local_actor, with_conductor
    from fleet_core.demo import others_on_sample
    from fleet_core.errors import ConflictError

    repo = settings.data_dir / "demo" / "sample"
    found = with_conductor(settings, lambda c: others_on_sample(c, local_actor(settings), repo))
    if not found or yes:
        return bool(found)
    listing = ", ".join(f"{r.short_id} ({r.status.value}) {r.description[:40]}" for r in found)
    what = f"{len(found)} task(s) not made by a demo use the sample repository {repo}"
    if not sys.stdin.isatty():
        raise ConflictError(f"{what}: {listing}; `fleet demo --yes` removes them too")
    print(f"{what}:\n  {listing}\nThe demo recreates that repository.", file=sys.stderr)
    answer = input("Remove these tasks too? [y/N] ").strip().lower()
    if answer not in ("y", "yes"):
        raise ConflictError(f"{what}; nothing was touched")
    return True


def demo(args: argparse.Namespace, settings: Settings) -> int:
    if args.runtime:
        settings = settings.model_copy(update={"runtime": args.runtime})
    if settings.runtime == "container":
        _container_ready(settings)
    others = _agreed(settings, args.yes)
    if not args.headless:
        from fleet_console.run import run_demo_console

        return run_demo_console(settings, others=others)
    from fleet_core.cli.runner import run_async
    from fleet_core.demo import run_demo

    final = run_async(lambda: run_demo(settings, others=others))
    return 0 if final else 1


COMMANDS = {"demo": Command(arguments, demo)}
