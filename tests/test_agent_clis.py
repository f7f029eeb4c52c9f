"""The adapters against the real CLIs' `--help`: the recorded fixtures always, the installed
CLIs with FLEET_TEST_REAL_CLIS=1 (`npm install -g @anthropic-ai/claude-code @openai/codex
@google/gemini-cli`, `pip install aider-chat`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from fleet_core.models import AgentType
from fleet_core.router import DEFAULT_AGENT_MODELS, DEFAULT_TABLE
from fleet_core.runtime.adapters import DEFAULT_ADAPTERS, build_adapters
from fleet_core.runtime.agent_profiles import PROFILES, unknown_flags

FIXTURES = Path(__file__).parent / "fixtures" / "clis"
REAL = [a for a in DEFAULT_ADAPTERS if a in PROFILES]
DIRS = {AgentType.CLAUDE_CODE: "claude", AgentType.CODEX: "codex", AgentType.GEMINI: "gemini",
        AgentType.AIDER: "aider"}  # fmt: skip
HELP = {AgentType.CODEX: "exec-help.txt"}


def fixture_help(agent: AgentType) -> str:
    return (FIXTURES / DIRS[agent] / HELP.get(agent, "help.txt")).read_text()


def test_every_real_cli_has_a_recorded_version_and_help() -> None:
    assert set(REAL) == set(DIRS)
    for agent in REAL:
        version = (FIXTURES / DIRS[agent] / "version.txt").read_text().strip()
        assert version and fixture_help(agent).count("\n") > 20, agent


@pytest.mark.parametrize("agent", REAL, ids=lambda a: a.value)
def test_adapter_uses_only_flags_its_cli_lists(agent: AgentType) -> None:
    adapter = DEFAULT_ADAPTERS[agent]
    assert adapter.binary == PROFILES[agent].binary
    assert unknown_flags(adapter.argv("m"), fixture_help(agent)) == []


def test_a_flag_the_help_does_not_list_is_caught() -> None:
    help_text = fixture_help(AgentType.GEMINI)
    bad = build_adapters({"gemini": {"command": ["gemini", "--yolo-mode", "-p", ""]}})
    assert unknown_flags(bad[AgentType.GEMINI].argv("m"), help_text) == ["--yolo-mode"]
    assert unknown_flags(["gemini", "--skip-trust", "-o=json", "-p", ""], help_text) == []


def test_gemini_trusts_the_checkout_and_streams() -> None:
    argv = DEFAULT_ADAPTERS[AgentType.GEMINI].argv("gemini-2.5-pro")
    assert "--skip-trust" in argv and argv[argv.index("-o") + 1] == "stream-json"


def test_streaming_modes() -> None:
    claude = DEFAULT_ADAPTERS[AgentType.CLAUDE_CODE].argv("m")
    assert claude[argv_at(claude, "--output-format")] == "stream-json" and "--verbose" in claude
    assert "--json" in DEFAULT_ADAPTERS[AgentType.CODEX].argv("m")


def argv_at(argv: list[str], flag: str) -> int:
    return argv.index(flag) + 1


def test_default_models_are_ones_their_cli_knows() -> None:
    """codex 0.171 says "Model metadata for `codex-mini-latest` not found" (and degrades)."""
    for agent in REAL:
        assert DEFAULT_AGENT_MODELS[agent] in PROFILES[agent].models, agent
    for choice in DEFAULT_TABLE.values():
        if choice.agent_type in PROFILES:
            assert choice.model in PROFILES[choice.agent_type].models, choice


def test_each_real_cli_says_how_it_authenticates_and_what_to_do() -> None:
    for agent in REAL:
        p = PROFILES[agent]
        assert p.secrets, agent
        assert set(p.secrets) <= set(DEFAULT_ADAPTERS[agent].env), agent
        assert {"agent_auth", "agent_config"} <= set(p.fixes), agent
        reasons = {pat.reason for pat in p.patterns}
        assert reasons == {"agent_auth", "agent_config", "agent_network", "usage_limit"}, agent


@pytest.mark.skipif(os.environ.get("FLEET_TEST_REAL_CLIS") != "1",
                    reason="set FLEET_TEST_REAL_CLIS=1 to check the installed CLIs")  # fmt: skip
@pytest.mark.parametrize("agent", REAL, ids=lambda a: a.value)
def test_real_cli_lists_every_flag_of_its_adapter(agent: AgentType, tmp_path: Path) -> None:
    profile = PROFILES[agent]
    exe = shutil.which(profile.binary)
    if exe is None:
        pytest.skip(f"{profile.binary} is not on PATH")
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TERM": "dumb"}
    out = subprocess.run([exe, *profile.help_args], capture_output=True, text=True, env=env,
                         timeout=120, cwd=tmp_path)  # fmt: skip
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert unknown_flags(DEFAULT_ADAPTERS[agent].argv("m"), text) == []
