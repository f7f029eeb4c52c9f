"""`fleet agent login AGENT`: the agent CLI's own login, run in the foreground on the
operator's terminal, in the same sandbox and the same persistent HOME its agents get
(`<data_dir>/homes/<operator>/<agent type>`), so what it stores there is what the agents find.

The login needs the network (an OAuth page, an API) and the terminal's stdin: it runs with the
host's network, which the agents themselves do not get unless configured so.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path

from fleet_core.config import Settings
from fleet_core.db.sysuser import RunAs
from fleet_core.errors import BadInputError
from fleet_core.models import AgentType
from fleet_core.runtime.adapters import build_adapters
from fleet_core.runtime.agent_profiles import profile_for
from fleet_core.runtime.launch import FDS
from fleet_core.runtime.paths import RuntimePaths, agent_home
from fleet_core.runtime.policy import sandbox_for
from fleet_core.runtime.sandbox import AGENT_HOME, BASE_PATH, NetworkMode, SandboxMode, seccomp_file


def login_agents() -> list[str]:
    return [a.value for a in AgentType if profile_for(a).login]


def run_login(settings: Settings, agent_name: str) -> int:
    """Run the login; its exit code."""
    try:
        agent = AgentType(agent_name)
    except ValueError:
        raise BadInputError("AGENT", f"unknown agent type {agent_name!r}") from None
    profile = profile_for(agent)
    if not profile.login:
        raise BadInputError(
            "AGENT", f"{agent.value} has no login of its own: set its key with `fleet secrets "
            f"set`; agents with a login: {', '.join(login_agents())}"
        )  # fmt: skip
    adapters = build_adapters(settings.agents)
    binary = adapters[agent].binary if agent in adapters else profile.binary
    exe = shutil.which(binary)
    if exe is None:
        raise BadInputError("AGENT", f"{binary} (for {agent.value}) is not installed: not on PATH")
    sandbox, _why = sandbox_for(settings, SandboxMode.AUTO)
    paths = RuntimePaths.from_settings(settings)
    owner = sandbox.run_as if sandbox else RunAs()
    home = agent_home(paths, settings.operator, agent, owner)
    argv = [exe, *profile.login[1:]]
    print(f"fleet: {' '.join([binary, *profile.login[1:]])} for {settings.operator}, "
          f"HOME {home}", flush=True)  # fmt: skip
    if sandbox is None:
        env = {"PATH": f"{Path(exe).parent}:{os.environ.get('PATH', BASE_PATH)}",
               "HOME": str(home), "TERM": os.environ.get("TERM", "xterm-256color"),
               "LANG": os.environ.get("LANG", "C.UTF-8")}  # fmt: skip
        return subprocess.run(argv, env=env, cwd=home, check=False).returncode
    net = dataclasses.replace(sandbox, network=NetworkMode.HOST)
    wrapped = net.wrap(argv, cwd=AGENT_HOME, writable=[], home=home)
    env = net.env({"PATH": f"{Path(exe).parent}:{BASE_PATH}",
                   "TERM": os.environ.get("TERM", "xterm-256color")})  # fmt: skip
    filt = seccomp_file(settings.data_dir / "sandbox")
    fd = os.open(filt, os.O_RDONLY)
    try:
        at = wrapped.index(FDS)
        wrapped[at : at + 1] = ["--seccomp", str(fd)]
        return subprocess.run(wrapped, env=env, pass_fds=(fd,), check=False).returncode
    finally:
        os.close(fd)
