"""What fleet knows of each real agent CLI, in one place per CLI: how it authenticates, how it
reports auth, configuration, network and usage-limit errors (exit codes, output patterns), what
output is only waiting noise, its streaming mode, the models it knows and how to log in.

Measured against Claude Code 2.1.197, codex-cli 0.171.0, Gemini CLI 0.61.0 and aider 0.86.2
(see tests/fixtures/clis/ for their `--help` and shared/reference/agent-clis.md for the runs).
The classes an agent's end falls into are in runtime/failures.py.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from fleet_core.models import AgentType

# The failure classes the adapters name (see runtime/failures.py for all of them).
AUTH = "agent_auth"
CONFIG = "agent_config"
NETWORK = "agent_network"
USAGE = "usage_limit"


@dataclass(frozen=True)
class Pattern:
    reason: str
    regex: re.Pattern[str]


def _p(reason: str, *alternatives: str) -> Pattern:
    return Pattern(reason, re.compile("|".join(alternatives), re.IGNORECASE))


@dataclass(frozen=True)
class Profile:
    """One CLI's ways: `binary` on PATH, `secrets` that authenticate it (any one of them), or
    `login` (its own command, run in the agent's HOME with `fleet agent login`)."""

    binary: str
    help_args: tuple[str, ...] = ("--help",)  # the help that lists its non-interactive flags
    secrets: tuple[str, ...] = ()
    login: tuple[str, ...] = ()
    login_dir: str = ""  # where its login lives in the agent's HOME
    exit_codes: dict[int, str] = field(default_factory=dict)
    patterns: tuple[Pattern, ...] = ()
    noise: re.Pattern[str] | None = None  # waiting output: never progress
    network_noise: bool = False  # its noise means the network is down
    stream: str | None = None  # "claude" | "codex" | "gemini": JSON lines to render
    models: tuple[str, ...] = ()
    fixes: dict[str, str] = field(default_factory=dict)  # reason -> what the operator does


PROFILES: dict[AgentType, Profile] = {
    AgentType.CLAUDE_CODE: Profile(
        binary="claude",
        secrets=("ANTHROPIC_API_KEY",),
        login=("claude",),
        login_dir=".claude",
        patterns=(
            _p(AUTH, r"Not logged in", r"Please run /login", r"Invalid API key",
               r"authentication_error", r"OAuth token (?:has )?expired"),
            _p(CONFIG, r"cannot be used with root/sudo privileges",
               r"Input must be provided either through stdin",
               r"error: unknown option", r"error: option .* argument missing",
               r"model: .* (?:not found|not_found_error)", r"Invalid model"),
            _p(NETWORK, r"Unable to connect to API", r"ConnectionRefused", r"Connection error",
               r"fetch failed", r"overloaded_error",
               r"Can't reach the API server"),  # 2.1.332, after 10 api_retry lines
            _p(USAGE, r"usage limit reached", r"Claude AI usage limit"),
        ),
        stream="claude",
        models=("claude-sonnet-4-5", "claude-opus-4-6", "claude-haiku-4-5", "sonnet", "opus",
                "haiku"),
        fixes={
            AUTH: "set ANTHROPIC_API_KEY with `fleet secrets set ANTHROPIC_API_KEY`, or log in "
                  "once with `fleet agent login claude_code`",
            CONFIG: "check the agent's command ([agents.claude_code] command) and model",
        },
    ),
    AgentType.CODEX: Profile(
        binary="codex",
        help_args=("exec", "--help"),
        secrets=("OPENAI_API_KEY",),
        login=("codex", "login"),
        login_dir=".codex",
        patterns=(
            _p(AUTH, r"\b401 Unauthorized\b", r"Incorrect API key", r"invalid_api_key",
               r"Not logged in", r"Please (?:re-)?authenticate", r"Token data is not available"),
            _p(CONFIG, r"error: unexpected argument", r"error: invalid value",
               r"Not inside a trusted directory", r"model_not_found",
               r"does not exist or you do not have access"),
            _p(NETWORK, r"waiting for network", r"failed to connect to Responses",
               r"stream disconnected before completion", r"error sending request"),
            _p(USAGE, r"You've hit your usage limit", r"usage_limit_reached"),
        ),
        noise=re.compile(r"Reconnecting\.\.\.|waiting for network|^\s*[⠁-⣿]\s*$", re.IGNORECASE),
        network_noise=True,
        stream="codex",
        models=("gpt-5.5", "gpt-5.5-codex", "gpt-5.6-sol", "gpt-6-sol"),
        fixes={
            AUTH: "set OPENAI_API_KEY with `fleet secrets set OPENAI_API_KEY`, or log in once "
                  "with `fleet agent login codex`",
            CONFIG: "check the agent's command ([agents.codex] command) and model",
        },
    ),
    AgentType.GEMINI: Profile(
        binary="gemini",
        secrets=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
        login=("gemini",),
        login_dir=".gemini",
        # Gemini CLI's exit codes: 41 FatalAuthenticationError, 42 FatalInputError, 44 sandbox,
        # 52 FatalConfigError, 55 untrusted folder.
        exit_codes={41: AUTH, 42: CONFIG, 44: CONFIG, 52: CONFIG, 55: CONFIG},
        patterns=(
            _p(AUTH, r"Please set an Auth method", r"API key not valid", r"API_KEY_INVALID"),
            _p(CONFIG, r"not running in a trusted directory", r"No input provided via stdin",
               r"Unknown argument", r"Invalid values:"),
            _p(NETWORK, r"fetch failed", r"Connection error"),
            _p(USAGE, r"RESOURCE_EXHAUSTED", r"Quota exceeded"),
        ),
        stream="gemini",
        models=("gemini-2.5-pro", "gemini-2.5-flash"),
        fixes={
            AUTH: "set GEMINI_API_KEY with `fleet secrets set GEMINI_API_KEY`, or log in once "
                  "with `fleet agent login gemini`",
            CONFIG: "check the agent's command ([agents.gemini] command: it needs --skip-trust) "
                    "and model",
        },
    ),
    AgentType.AIDER: Profile(
        binary="aider",
        secrets=("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY"),
        patterns=(
            _p(AUTH, r"litellm\.AuthenticationError", r"Missing \w+ API Key",
               r"invalid x-api-key"),
            _p(CONFIG, r"aider: error:", r"litellm\.NotFoundError",
               r"LLM Provider NOT provided"),
            _p(NETWORK, r"The API provider's servers are down or overloaded",
               r"litellm\.APIConnectionError", r"litellm\.InternalServerError"),
            _p(USAGE, r"litellm\.RateLimitError"),
        ),
        models=("claude-sonnet-4-5", "sonnet", "gpt-5", "gemini/gemini-2.5-pro"),
        fixes={
            AUTH: "set the model provider's key (ANTHROPIC_API_KEY, OPENAI_API_KEY or "
                  "GEMINI_API_KEY) with `fleet secrets set`",
            CONFIG: "check the agent's command ([agents.aider] command) and model",
        },
    ),
}  # fmt: skip

GENERIC = Profile(binary="")


_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")


def unknown_flags(argv: list[str] | tuple[str, ...], help_text: str) -> list[str]:
    """The options of `argv` (`--name`, `--name=value`, `-x`) that `help_text` does not list."""
    listed = set(_OPTION.findall(help_text))
    out = []
    for arg in argv[1:]:
        if not arg.startswith("-") or arg == "-":
            continue
        name = arg.split("=", 1)[0]
        if name not in listed:
            out.append(name)
    return out


def profile_for(agent: AgentType) -> Profile:
    return PROFILES.get(agent, GENERIC)


def agent_for_binary(binary: str) -> AgentType | None:
    for agent, profile in PROFILES.items():
        if profile.binary == binary:
            return agent
    return None
