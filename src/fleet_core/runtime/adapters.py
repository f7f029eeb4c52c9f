"""Agent adapters as data: one command template per agent type and what it may see.

Flags from each CLI's non-interactive mode, checked against its `--help` (the fixtures in
tests/fixtures/clis/, and the real CLI with FLEET_TEST_REAL_CLIS=1): `claude -p` and
`codex exec -` read the prompt on stdin, in their streaming modes (a long, healthy run keeps
printing); `gemini -p ""` appends stdin to its (empty) prompt and needs `--skip-trust` in a
folder it has never seen; aider takes `--message-file`. `{model}` is replaced by the task's
model, `{prompt_file}` by the path of the 0600 prompt file (then the prompt is not on stdin).
How each CLI authenticates and fails is in runtime/agent_profiles.py.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleet_core.errors import BadInputError
from fleet_core.models import AgentType
from fleet_core.runtime.agent_profiles import Profile, profile_for

PROMPT_FILE = "{prompt_file}"
MODEL = "{model}"
GIT_TOKENS = ("GITHUB_TOKEN", "GH_TOKEN")
DEFAULT_IDLE_MINUTES = 10.0
MAX_IDLE_MINUTES = 1440.0


@dataclass(frozen=True)
class Adapter:
    agent_type: AgentType
    command: tuple[str, ...]
    env: tuple[str, ...]  # variables the agent may receive (secrets and settings)
    idle_minutes: float = DEFAULT_IDLE_MINUTES  # no progress for this long: `agent_idle`
    runtime: str | None = None  # "local" | "container": where this type's agents run

    @property
    def profile(self) -> Profile:
        return profile_for(self.agent_type)

    @property
    def binary(self) -> str:
        return self.command[0]

    @property
    def prompt_on_stdin(self) -> bool:
        return PROMPT_FILE not in self.command

    def argv(self, model: str, prompt_file: str = PROMPT_FILE) -> list[str]:
        return [a.replace(MODEL, model).replace(PROMPT_FILE, prompt_file) for a in self.command]


DEFAULT_ADAPTERS: dict[AgentType, Adapter] = {
    AgentType.CLAUDE_CODE: Adapter(
        AgentType.CLAUDE_CODE,
        ("claude", "-p", "--output-format", "stream-json", "--verbose", "--model", MODEL,
         "--permission-mode", "acceptEdits", "--allowedTools", "Bash Edit Write Read Glob Grep"),
        ("ANTHROPIC_API_KEY", *GIT_TOKENS),
    ),
    AgentType.CODEX: Adapter(
        AgentType.CODEX,
        ("codex", "exec", "--json", "-m", MODEL, "-s", "workspace-write", "--skip-git-repo-check",
         "-"),
        ("OPENAI_API_KEY", *GIT_TOKENS),
    ),
    AgentType.GEMINI: Adapter(
        AgentType.GEMINI,
        ("gemini", "-m", MODEL, "--approval-mode", "yolo", "--skip-trust", "-o", "stream-json",
         "-p", ""),
        ("GEMINI_API_KEY", "GOOGLE_API_KEY", *GIT_TOKENS),
    ),
    AgentType.AIDER: Adapter(
        AgentType.AIDER,
        ("aider", "--model", MODEL, "--yes-always", "--no-check-update", "--no-gitignore",
         "--no-pretty", "--message-file", PROMPT_FILE),
        ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", *GIT_TOKENS),
    ),
    AgentType.DEMO: Adapter(
        AgentType.DEMO,
        (sys.executable, "-m", "fleet_core.demo_agent"),
        ("FLEET_DEMO_DELAY",),
    ),
}  # fmt: skip


AGENT_KEYS = frozenset({"command", "env", "idle_minutes", "runtime"})


def build_adapters(
    overrides: Mapping[str, Mapping[str, object]] | None = None,
) -> dict[AgentType, Adapter]:
    """Defaults plus config (`[agents.<type>] command = [...], env = [...], idle_minutes =
    N`); `custom` exists only when configured. A bad value names its field."""
    adapters = dict(DEFAULT_ADAPTERS)
    for name, spec in (overrides or {}).items():
        try:
            agent = AgentType(name)
        except ValueError:
            raise BadInputError(f"agents.{name}", "unknown agent type") from None
        if not isinstance(spec, Mapping):
            raise BadInputError(f"agents.{name}", "must be a table")
        for key in spec:
            if key not in AGENT_KEYS:
                raise BadInputError(f"agents.{name}.{key}", "unknown setting")
        base = adapters.get(agent)
        command = _strings(spec, "command", name) or (base.command if base else ())
        if not command:
            raise BadInputError(f"agents.{name}.command", "needs a command (a list of arguments)")
        env = _strings(spec, "env", name) or (base.env if base else ())
        idle = spec.get("idle_minutes", base.idle_minutes if base else DEFAULT_IDLE_MINUTES)
        if isinstance(idle, bool) or not isinstance(idle, int | float):
            raise BadInputError(f"agents.{name}.idle_minutes", "must be a number of minutes")
        if not 0 < idle <= MAX_IDLE_MINUTES:
            limit = f"must be more than 0 and at most {MAX_IDLE_MINUTES:.0f}"
            raise BadInputError(f"agents.{name}.idle_minutes", limit)
        runtime = spec.get("runtime", base.runtime if base else None)
        if runtime not in (None, "local", "container"):
            raise BadInputError(f"agents.{name}.runtime", "must be local or container")
        adapters[agent] = Adapter(agent, command, env, float(idle), runtime)
    return adapters


def _strings(spec: Mapping[str, object], key: str, name: str) -> tuple[str, ...]:
    value = spec.get(key)
    if value is None:
        return ()
    if (
        not isinstance(value, Sequence)
        or isinstance(value, str)
        or not all(isinstance(v, str) for v in value)
    ):
        raise BadInputError(f"agents.{name}.{key}", "must be a list of strings")
    return tuple(value)


def adapter_for(adapters: Mapping[AgentType, Adapter], agent_type: AgentType) -> Adapter:
    try:
        return adapters[agent_type]
    except KeyError:
        raise BadInputError(
            "agent_type",
            f"no command for {agent_type.value} (set [agents.{agent_type.value}] command)",
        ) from None
