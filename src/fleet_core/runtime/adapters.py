"""Agent adapters as data: one command template per agent type and what it may see.

Flags from each CLI's documented non-interactive mode (see shared/reference/agent-clis.md):
`claude -p` and `codex exec -` read the prompt on stdin; `gemini -p ""` appends stdin to its
(empty) prompt; aider takes `--message-file`. `{model}` is replaced by the task's model,
`{prompt_file}` by the path of the 0600 prompt file (then the prompt is not on stdin).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from fleet_core.errors import BadInputError
from fleet_core.models import AgentType

PROMPT_FILE = "{prompt_file}"
MODEL = "{model}"
GIT_TOKENS = ("GITHUB_TOKEN", "GH_TOKEN")


@dataclass(frozen=True)
class Adapter:
    agent_type: AgentType
    command: tuple[str, ...]
    env: tuple[str, ...]  # variables the agent may receive (secrets and settings)

    @property
    def prompt_on_stdin(self) -> bool:
        return PROMPT_FILE not in self.command

    def argv(self, model: str, prompt_file: str = PROMPT_FILE) -> list[str]:
        return [a.replace(MODEL, model).replace(PROMPT_FILE, prompt_file) for a in self.command]


DEFAULT_ADAPTERS: dict[AgentType, Adapter] = {
    AgentType.CLAUDE_CODE: Adapter(
        AgentType.CLAUDE_CODE,
        ("claude", "-p", "--model", MODEL, "--permission-mode", "acceptEdits",
         "--allowedTools", "Bash Edit Write Read Glob Grep"),
        ("ANTHROPIC_API_KEY", *GIT_TOKENS),
    ),
    AgentType.CODEX: Adapter(
        AgentType.CODEX,
        ("codex", "exec", "-m", MODEL, "-s", "workspace-write", "--skip-git-repo-check", "-"),
        ("OPENAI_API_KEY", *GIT_TOKENS),
    ),
    AgentType.GEMINI: Adapter(
        AgentType.GEMINI,
        ("gemini", "-m", MODEL, "--approval-mode", "yolo", "-p", ""),
        ("GEMINI_API_KEY", "GOOGLE_API_KEY", *GIT_TOKENS),
    ),
    AgentType.AIDER: Adapter(
        AgentType.AIDER,
        ("aider", "--model", MODEL, "--yes-always", "--message-file", PROMPT_FILE),
        ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", *GIT_TOKENS),
    ),
    AgentType.DEMO: Adapter(
        AgentType.DEMO,
        (sys.executable, "-m", "fleet_core.demo_agent"),
        ("FLEET_DEMO_DELAY",),
    ),
}  # fmt: skip


def build_adapters(
    overrides: Mapping[str, Mapping[str, Sequence[str]]] | None = None,
) -> dict[AgentType, Adapter]:
    """Defaults plus config (`[agents.<type>] command = [...], env = [...]`); `custom` exists
    only when configured."""
    adapters = dict(DEFAULT_ADAPTERS)
    for name, spec in (overrides or {}).items():
        try:
            agent = AgentType(name)
        except ValueError:
            raise BadInputError(f"agents.{name}", "unknown agent type") from None
        base = adapters.get(agent)
        command = tuple(spec.get("command") or (base.command if base else ()))
        if not command:
            raise BadInputError(f"agents.{name}.command", "needs a command (a list of arguments)")
        env = tuple(spec.get("env") or (base.env if base else ()))
        adapters[agent] = Adapter(agent, command, env)
    return adapters


def adapter_for(adapters: Mapping[AgentType, Adapter], agent_type: AgentType) -> Adapter:
    try:
        return adapters[agent_type]
    except KeyError:
        raise BadInputError(
            "agent_type",
            f"no command for {agent_type.value} (set [agents.{agent_type.value}] command)",
        ) from None
