"""The kept agent log (the real pipe writer, rotation), its readable form (streamed JSON of
the real CLIs rendered), and the failure classes of the real CLIs' recorded output."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest

from fleet_core.failures import classify, idle_reason
from fleet_core.models import AgentType
from fleet_core.runtime import agent_log, logpipe
from fleet_core.runtime.agent_profiles import profile_for
from fleet_core.runtime.echo import prompt_hashes, strip_echo

RUNS = Path(__file__).parent / "fixtures" / "clis" / "runs"
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def test_the_pipe_writer_keeps_every_byte_and_rotates_at_its_cap(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    data = b"".join(b"line %05d\r\n" % i for i in range(3000))  # 36,000 bytes
    subprocess.run([sys.executable, "-S", logpipe.__file__, str(log), "20000"], input=data,
                   check=True)  # fmt: skip
    rotated = log.with_name("t.log.1")
    assert rotated.read_bytes() + log.read_bytes() == data  # nothing lost across the cut
    assert rotated.stat().st_size >= 20000 and log.stat().st_size < 20000
    assert oct(log.stat().st_mode & 0o777) == "0o600"
    assert agent_log.read_raw(log, 100_000) == data
    assert agent_log.read_tail(log, 2) == ["line 02998", "line 02999"]
    assert agent_log.read_tail(tmp_path / "none.log", 2) is None


def test_terminal_lines_read_as_they_show() -> None:
    assert agent_log.clean_line("\x1b[31mred\x1b[0m text\r") == "red text"
    assert agent_log.clean_line("10%\r50%\r100% done") == "100% done"


def test_claude_stream_json_is_rendered() -> None:
    lines = agent_log.readable((RUNS / "claude-not-logged-in.out").read_bytes())
    assert lines == [
        "[claude] session started: model claude-sonnet-4-5, acceptEdits mode",
        "Not logged in · Please run /login",
        "[error] authentication_failed",
        "[result: error] Not logged in · Please run /login",
    ]


def test_codex_json_is_rendered() -> None:
    lines = agent_log.readable((RUNS / "codex-no-network.out").read_bytes())
    assert "[error] Reconnecting... 2/5 (stream disconnected before completion: failed to " \
           "lookup address information: Name does not resolve)" in lines  # fmt: skip
    assert lines[-1] == ("[error] Reconnecting... waiting for network (Connection failed: error "
                         "sending request)")  # fmt: skip
    assert not any(line.startswith("{") for line in lines)


@pytest.mark.parametrize(
    ("agent", "run", "code", "reason", "said"),
    [
        (AgentType.CLAUDE_CODE, "claude-not-logged-in.out", 1, "agent_auth", "Not logged in"),
        (AgentType.CLAUDE_CODE, "claude-root.out", 1, "agent_config", "root/sudo"),
        (AgentType.GEMINI, "gemini-no-auth.out", 41, "agent_auth", "Please set an Auth"),
        (AgentType.GEMINI, "gemini-untrusted.out", 55, "agent_config", "trusted directory"),
        (AgentType.GEMINI, "gemini-no-input.out", 42, "agent_config", "No input provided"),
        (AgentType.AIDER, "aider-no-key.out", 0, "agent_auth", "litellm.AuthenticationError"),
    ],
)
def test_the_real_clis_failures_are_classified(
    agent: AgentType, run: str, code: int, reason: str, said: str
) -> None:
    tail = "\n".join(agent_log.readable((RUNS / run).read_bytes()))
    verdict = classify(profile_for(agent), exit_code=code, oom=False, tail=tail,
                       push_failed=False, now=NOW)  # fmt: skip
    assert verdict.reason == reason and said in (verdict.message or "")
    assert verdict.hint and "fleet retry" in verdict.hint


def test_other_ends() -> None:
    claude = profile_for(AgentType.CLAUDE_CODE)

    def reason(code: int | None, tail: str, **kw: bool) -> str:
        return classify(claude, exit_code=code, oom=kw.get("oom", False), tail=tail,
                        push_failed=kw.get("push", False), now=NOW).reason  # fmt: skip

    assert reason(1, "API Error: Unable to connect to API (ConnectionRefused)") == "agent_network"
    assert reason(1, "Claude AI usage limit reached|1764417600") == "usage_limit"
    assert reason(137, "", oom=True) == "oom"
    assert reason(0, "done") == "exited_without_pull_request"
    assert reason(0, "done", push=True) == "push_failed"
    assert reason(2, "Traceback: boom") == "agent_exited"
    missing = classify(claude, exit_code=127, oom=False, tail="fleet: cannot start claude",
                       push_failed=False, now=NOW, not_found=True)  # fmt: skip
    assert missing.reason == "agent_not_installed"


def test_waiting_noise_makes_an_idle_codex_a_network_failure() -> None:
    codex = profile_for(AgentType.CODEX)
    tail = "\n".join(agent_log.readable((RUNS / "codex-no-network.out").read_bytes()))
    assert idle_reason(codex, tail).reason == "agent_network"
    assert idle_reason(codex, "thinking about it").reason == "agent_idle"
    assert codex.noise is not None and codex.noise.search("Reconnecting... 3/5")


def test_the_prompts_echo_is_cut_and_nothing_else() -> None:
    prompt = "## Task\nFix the divide function in calc.py\n\n## Safety\nStay in your checkout.\n"
    keys = frozenset(prompt_hashes(prompt).decode().split())
    shown = ("OpenAI Codex v0.171.0\nuser\n## Task\nFix  the divide function in calc.py\n"
             "## Safety\nStay in your checkout.\nERROR: Reconnecting... 2/5\n"
             "Traceback: boom\n" + "x\n" * 10 + "## Task")  # fmt: skip
    out = strip_echo(shown, keys).splitlines()
    assert "Fix  the divide function in calc.py" not in out and "## Safety" not in out
    assert out[:2] == ["OpenAI Codex v0.171.0", "user"] and "Traceback: boom" in out
    assert out[-1] == "## Task"  # a short line far from any echo is the agent's own


def test_what_the_prompt_quotes_of_earlier_output_is_not_echo() -> None:
    said = "API Error: Unable to connect to API (ConnectionRefused)"
    prompt = f"## Previous attempt failed\nLog tail:\n{said}\n"
    keys = frozenset(prompt_hashes(prompt, [said]).decode().split())
    assert strip_echo(f"fleet: starting claude for task x\n{said}", keys).splitlines() == [
        "fleet: starting claude for task x",
        said,
    ]
    everything = frozenset(prompt_hashes(prompt).decode().split())
    assert said not in strip_echo(said, everything)
