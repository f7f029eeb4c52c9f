"""`fleet image build [--agent A] [--base IMAGE]` and `fleet image list`: container mode's
images, made through the Docker Engine API without a registry (runtime/docker_images.py).

`build` makes the base image (debootstrap + import) when `--base` is not given and the default
base is missing, then each agent type's image (all shipped ones, or `--agent`), printing the
build's progress."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fleet_core.cli.runner import run_async
from fleet_core.cli.verbs import Command
from fleet_core.config import Settings
from fleet_core.errors import BadInputError
from fleet_core.models import IMAGE_AGENTS, AgentType


def arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="{build,list}")
    build = sub.add_parser("build", help="build agent images (and the base image if missing)")
    build.add_argument("--agent", choices=IMAGE_AGENTS, help="only this agent type's image")
    build.add_argument("--base", metavar="IMAGE",
                       help="the image to build FROM (default: fleet-base:bookworm, made here "
                       "by debootstrap when missing)")  # fmt: skip
    build.add_argument("--ca-bundle", metavar="PEM",
                       help="certificates the build and the agents trust besides Debian's "
                       "(a TLS-inspecting proxy's authority), e.g. "
                       "/etc/ssl/certs/ca-certificates.crt")  # fmt: skip
    listing = sub.add_parser("list", help="fleet's images on the daemon")
    listing.add_argument("--json", action="store_true")


def run(args: argparse.Namespace, settings: Settings) -> int:
    from fleet_core.runtime import docker_client, docker_images

    def say(line: str) -> None:
        print(line, flush=True)

    async def build() -> int:
        agents = [AgentType(args.agent)] if args.agent else [AgentType(a) for a in IMAGE_AGENTS]
        async with docker_client.client(settings.container.docker_host) as docker:
            base = args.base or docker_images.BASE_TAG
            if args.base is None:
                made = await docker_images.ensure_base(docker, progress=say)
                say(f"base {base}: {'made' if made else 'present'}")
            for agent in agents:
                tag = settings.container.images.get(agent.value) or docker_images.image_tag(agent)
                say(f"building {tag} from {base}")
                await docker_images.build(docker, agent, base=base, tag=tag, progress=say,
                                          ca_bundle=ca)  # fmt: skip
                say(f"built {tag}")
        return 0

    async def show() -> int:
        async with docker_client.client(settings.container.docker_host) as docker:
            images = await docker_images.listing(docker)
        if args.json:
            print(json.dumps([i.__dict__ for i in images]))
        elif not images:
            print("no fleet images on this daemon: `fleet image build`")
        for i in images if not args.json else []:
            print(f"{i.tag:<36} {i.image_id}  {i.size_mb:>8.1f} MB")
        return 0

    ca = None
    if args.action == "build" and args.ca_bundle is not None:
        try:
            ca = docker_images.read_ca_bundle(Path(args.ca_bundle))
        except BadInputError as exc:
            print(f"fleet image build: --ca-bundle: {exc.message}", file=sys.stderr)
            return exc.exit_code
    try:
        return run_async(build if args.action == "build" else show)
    except (docker_client.DockerUnavailableError, docker_images.ImageError) as exc:
        print(f"fleet image {args.action}: {exc}", file=sys.stderr)
        return 1


COMMANDS = {"image": Command(arguments, run)}
