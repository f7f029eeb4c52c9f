"""Prompt enrichment: tiers under a token budget, task sections, the repository summary."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest

from fleet_core.enrichment import (
    DEFAULT_BUDGET,
    SAFETY_TEXT,
    TYPE_GUIDANCE,
    ContextTier,
    Section,
    build_prompt,
    estimate_tokens,
    repository_summary,
    task_sections,
)
from fleet_core.errors import BadInputError
from fleet_core.models import TaskType
from fleet_core.sanitize import PATH_MARKER, REDACTED

C, R, X, B = (
    ContextTier.CRITICAL,
    ContextTier.RELEVANT,
    ContextTier.CROSS_AGENT,
    ContextTier.BACKGROUND,
)


def section(label: str, tier: ContextTier, chars: int) -> Section:
    """A section whose rendering `## {label}\\n{content}\\n\\n` is exactly `chars` long."""
    return Section(label, "x" * (chars - len(label) - 6), tier)


@pytest.mark.parametrize(
    ("text", "tokens"), [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100)]
)
def test_estimate_tokens(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_rendering_and_hash() -> None:
    result = build_prompt([Section("Task", "Fix it.\n", C), Section("Notes", "n", B)])
    assert result.prompt == "## Task\nFix it.\n\n## Notes\nn\n\n"
    assert result.included == ("Task", "Notes")
    assert result.dropped == ()
    assert result.truncated is False
    assert result.tokens == estimate_tokens(result.prompt) == 8  # 29 chars
    assert result.budget == DEFAULT_BUDGET == 8000
    assert result.prompt_hash == hashlib.sha256(result.prompt.encode()).hexdigest()


def test_order_is_tier_then_input_order() -> None:
    sections = [
        Section("bg1", "a", B),
        Section("rel1", "b", R),
        Section("crit1", "c", C),
        Section("cross", "d", X),
        Section("rel2", "e", R),
        Section("crit2", "f", C),
    ]
    result = build_prompt(sections)
    assert result.included == ("crit1", "crit2", "rel1", "rel2", "cross", "bg1")
    assert result.prompt.index("## crit2") < result.prompt.index("## rel1")


def test_budget_drops_what_does_not_fit_and_tries_smaller_later_sections() -> None:
    sections = [
        section("crit", C, 40),  # 10 tokens
        section("big", R, 80),  # 20 tokens: 30 > 25, dropped
        section("small", R, 40),  # 10 tokens: 20 <= 25, kept
        section("tiny", B, 20),  # 5 tokens: 25 <= 25, kept
        section("one-more", B, 4 + 13),  # would make 30: dropped
    ]
    result = build_prompt(sections, budget=25)
    assert result.included == ("crit", "small", "tiny")
    assert result.dropped == ("big", "one-more")
    assert result.truncated is True
    assert result.tokens == 25
    assert "## big" not in result.prompt


def test_critical_sections_are_kept_over_budget() -> None:
    sections = [section("ctx", B, 8), section("crit1", C, 100), section("crit2", C, 100)]
    result = build_prompt(sections, budget=10)
    assert result.included == ("crit1", "crit2")
    assert result.dropped == ("ctx",)
    assert result.truncated is True
    assert result.tokens == 50 > result.budget


@pytest.mark.parametrize("budget", [0, -5])
def test_budget_must_be_positive(budget: int) -> None:
    with pytest.raises(BadInputError) as info:
        build_prompt([Section("Task", "t", C)], budget=budget)
    assert info.value.field == "budget"


def test_hash_is_deterministic_and_follows_content() -> None:
    sections = [Section("Task", "Fix the login bug", C), Section("Repository", "repo", R)]
    first, again = build_prompt(sections), build_prompt(list(sections))
    changed = build_prompt([Section("Task", "Fix the logout bug", C), sections[1]])
    assert first.prompt_hash == again.prompt_hash
    assert len(first.prompt_hash) == 64
    assert changed.prompt_hash != first.prompt_hash


WORKTREE = "/data/worktrees/T7"


def test_task_sections_first_attempt() -> None:
    sections = task_sections(
        description="Fix the crash when the config file is empty.",
        task_type=TaskType.BUG_FIX,
        repository="/srv/repos/app",
        base_branch="main",
        branch="fleet/T7-empty-config",
        repo_summary="README.md\nsrc/app.py",
        context_overrides={"style": "Use black.", "deploy": "export API_KEY=abc123"},
        worktree=WORKTREE,
    )
    assert [(s.label, s.tier) for s in sections] == [
        ("Task", C),
        ("Task type", C),
        ("Safety", C),
        ("Workflow", C),
        ("Repository", R),
        ("Repository files", R),
        ("Context: deploy", B),
        ("Context: style", B),
    ]
    by_label = {s.label: s.content for s in sections}
    assert by_label["Task"] == "Fix the crash when the config file is empty."
    assert by_label["Task type"] == f"bug_fix: {TYPE_GUIDANCE[TaskType.BUG_FIX]}"
    assert "regression test" in by_label["Task type"]
    assert by_label["Safety"] == SAFETY_TEXT
    assert "`fleet/T7-empty-config`, created from `main`" in by_label["Workflow"]
    assert by_label["Repository"] == "/srv/repos/app\nBase branch: main"
    assert by_label["Repository files"] == "README.md\nsrc/app.py"
    assert by_label["Context: deploy"] == f"export API_KEY={REDACTED}"
    assert by_label["Context: style"] == "Use black."


def test_task_sections_without_base_branch_or_summary() -> None:
    sections = task_sections(
        description="Review the PR.",
        task_type=TaskType.REVIEW,
        repository="/srv/repos/app",
        base_branch=None,
        branch="fleet/T8",
        repo_summary=None,
        context_overrides={},
    )
    by_label = {s.label: s.content for s in sections}
    assert list(by_label) == ["Task", "Task type", "Safety", "Workflow", "Repository"]
    assert "created from the repository's default branch" in by_label["Workflow"]
    assert by_label["Repository"].endswith("Base branch: (default)")


def test_every_task_type_has_guidance() -> None:
    assert set(TYPE_GUIDANCE) == set(TaskType)


def test_safety_text_covers_the_rules() -> None:
    for phrase in ("data, never instructions", "secrets", "environment variables", "checkout"):
        assert phrase in SAFETY_TEXT
    assert "tests" in SAFETY_TEXT


def test_task_sections_retry_has_sanitized_failure() -> None:
    token = "ghp_Zx8Kq2LmN4pR6sT8vW0yA1bC3dE5fG7hJ9kL"
    error_output = "\n".join(
        [
            *(f"noise line {i}" for i in range(300)),
            f'  File "{WORKTREE}/src/app.py", line 12, in load',
            '  File "/home/alice/.venv/lib/site.py", line 3, in x',
            f"GITHUB_TOKEN={token}",
            "ValueError: empty config",
        ]
    )
    failure = {
        "reason": "ci_failed",
        "attempt": 1,
        "exit_code": 1,
        "error_output": error_output,
        "failing_checks": ["lint", "tests (3.11)"],
        "ci_log": "password: hunter22\nFAILED tests/test_app.py::test_empty",
        "diff": f"--- a/src/app.py\n+++ b/src/app.py\n+API_TOKEN = '{token}'\n" + "+x\n" * 1500,
    }
    sections = task_sections(
        description="Fix the crash.",
        task_type=TaskType.BUG_FIX,
        repository="/srv/repos/app",
        base_branch="main",
        branch="fleet/T7",
        repo_summary=None,
        context_overrides={},
        failure=failure,
        worktree=WORKTREE,
    )
    labels = [(s.label, s.tier) for s in sections]
    assert ("Previous attempt failed", C) in labels
    assert ("Previous diff", R) in labels
    by_label = {s.label: s.content for s in sections}
    failed = by_label["Previous attempt failed"]
    assert (
        "Attempt: 1\nReason: ci_failed\nExit code: 1\nFailing checks: lint, tests (3.11)" in failed
    )
    assert failed.endswith("password: [REDACTED]\nFAILED tests/test_app.py::test_empty")
    assert '  File "src/app.py", line 12, in load' in failed
    assert f'  File "{PATH_MARKER}/site.py", line 3, in x' in failed
    assert "ValueError: empty config" in failed
    assert "[… earlier output omitted]" in failed and "noise line 0\n" not in failed
    assert "noise line 299" in failed
    diff = by_label["Previous diff"]
    assert diff.startswith("--- a/src/app.py\n+++ b/src/app.py\n+API_TOKEN = '[REDACTED]'")
    assert diff.endswith("\n[… rest omitted]")
    assert len(diff) == 2000 + len("\n[… rest omitted]")
    for content in by_label.values():
        assert token not in content
        assert "hunter22" not in content
        assert "/home/alice" not in content and WORKTREE not in content
    prompt = build_prompt(sections)
    assert prompt.included[:5] == (
        "Task",
        "Task type",
        "Safety",
        "Workflow",
        "Previous attempt failed",
    )


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    git(tmp_path, "init", "-q")
    for name in ["b.py", "a.py", "src/pkg/mod.py", "docs/index.md", "untracked.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x\n")
    git(tmp_path, "add", "b.py", "a.py", "src", "docs")
    return tmp_path


async def test_repository_summary_lists_tracked_files_sorted(repo: Path) -> None:
    assert await repository_summary(repo) == "a.py\nb.py\ndocs/index.md\nsrc/pkg/mod.py"


async def test_repository_summary_caps_entries(repo: Path) -> None:
    summary = await repository_summary(repo, max_entries=2)
    assert summary == "a.py\nb.py\n… and 2 more files"


async def test_repository_summary_caps_chars(repo: Path) -> None:
    summary = await repository_summary(repo, max_chars=30)
    assert summary == "a.py\nb.py\n… and 2 more files"
    assert len(summary) <= 30


async def test_repository_summary_of_empty_repo(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    assert await repository_summary(tmp_path) == "(no tracked files)"


async def test_repository_summary_outside_git(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("x")
    summary = await repository_summary(tmp_path)
    assert summary == "(file list unavailable: not a git repository, or git failed)"
    assert await repository_summary(tmp_path / "missing") == summary
