"""Which sandbox a configuration gets on this machine, and what it must hide."""

from __future__ import annotations

import logging
from pathlib import Path

from fleet_core.config import Settings, config_path
from fleet_core.db.embedded import ROOT_CLUSTER_BASE, EmbeddedCluster
from fleet_core.runtime.sandbox import Sandbox, SandboxMode, SandboxPolicy, resolve

log = logging.getLogger(__name__)


def fleet_paths(settings: Settings) -> list[Path]:
    """Everything of fleet's an agent must not see: the data dir (keys, run files, logs,
    other checkouts, snapshots), the cluster's directory and socket, the config dir."""
    paths = [settings.data_dir, config_path().parent]
    if settings.worktree_dir is not None:
        paths.append(settings.worktree_dir)
    if settings.database_url is None:
        cluster = EmbeddedCluster(settings.data_dir, pg_dir=settings.pg_dir)
        paths += [cluster.root, cluster.socket_dir, ROOT_CLUSTER_BASE]
    return paths


def sandbox_for(
    settings: Settings, default: SandboxMode = SandboxMode.AUTO
) -> tuple[Sandbox | None, str | None]:
    """(the sandbox, None) or (None, why agents run unsandboxed); raises
    SandboxUnavailableError when the mode is `required` and none works here."""
    policy = SandboxPolicy(
        mode=settings.sandbox or default,
        network=settings.sandbox_network,
        agent_user=settings.agent_user,
    )
    sandbox, why = resolve(policy, fleet_paths(settings))
    if sandbox is None:
        log.warning("agents run WITHOUT a sandbox: %s", why)
    return sandbox, why
