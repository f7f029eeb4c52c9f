"""Reviewers that are agent CLIs in their non-interactive JSON mode, run like agents (in the
sandbox when there is one, with the operator's HOME for that CLI, where its login lives) on a
read-only checkout of the PR head, with the prompt on stdin and a timeout of their own:

    claude -p --output-format json --json-schema SCHEMA --model M --permission-mode plan
    codex exec --output-schema FILE -o FILE -s read-only --skip-git-repo-check -m M -
    gemini -o json -m M --skip-trust --approval-mode plan -p ""
"""

from __future__ import annotations

import asyncio
import json
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from fleet_core.db.sysuser import RunAs
from fleet_core.models import AgentType
from fleet_core.review.reviewers import RawAnswer, ReviewRequest
from fleet_core.review.settings import CLI_BINARY
from fleet_core.review.verdict import SCHEMA
from fleet_core.runtime.contained import Confinement
from fleet_core.runtime.git import git
from fleet_core.runtime.paths import RuntimePaths, agent_home

DEFAULT_MODELS = {"claude_code": "sonnet", "codex": "gpt-5-codex", "gemini_cli": "gemini-2.5-pro"}
AGENT_OF = {"claude_code": AgentType.CLAUDE_CODE, "codex": AgentType.CODEX,
            "gemini_cli": AgentType.GEMINI}  # fmt: skip
FEED = 'exec "$0" "$@" < "$FLEET_REVIEW_PROMPT"'  # the prompt on stdin, inside the sandbox too


class CliReviewerError(Exception):
    """The CLI ran but gave no answer (an error result, or output that is not its JSON)."""


class CliReviewer:
    def __init__(
        self,
        kind: str,
        focus: str,
        *,
        model: str | None,
        confinement: Confinement,
        paths: RuntimePaths,
        owner: RunAs,
        timeout_s: float,
    ) -> None:
        self.kind = kind
        self.focus = focus
        self.model = model or DEFAULT_MODELS[kind]
        self.box = confinement
        self.paths = paths
        self.owner = owner
        self.timeout_s = timeout_s

    async def ask(self, request: ReviewRequest) -> RawAnswer:
        binary = shutil.which(CLI_BINARY[self.kind])
        if binary is None:
            raise CliReviewerError(f"{CLI_BINARY[self.kind]} is not installed (not on PATH)")
        root = self.paths.data_dir / "reviews"
        root.mkdir(parents=True, exist_ok=True, mode=0o711)
        scratch = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="review-", dir=root))
        try:
            tree, work = scratch / "tree", scratch / "work"
            await _checkout(Path(request.repository), request.branch, request.head_sha, tree)
            work.mkdir()
            (work / "prompt").write_text(request.prompt)
            (work / "schema.json").write_text(json.dumps(SCHEMA))
            await asyncio.to_thread(self.box.give, scratch)  # the agent user's (when root)
            home = agent_home(self.paths, request.operator_id, AGENT_OF[self.kind], self.owner)
            argv = ["sh", "-c", FEED, binary, *self._args(work)]
            readable = [tree]
            if self.box.sandbox is not None:
                readable += self.box.sandbox.tool_paths(binary)
            result = await self.box.run(
                argv,
                cwd=tree,
                writable=[work, home],
                readable=readable,
                env={"HOME": str(home), "FLEET_REVIEW_PROMPT": str(work / "prompt")},
                timeout=self.timeout_s,
            )
            return self._answer(result.stdout, work)
        finally:
            await asyncio.to_thread(_remove, scratch)

    def _args(self, work: Path) -> list[str]:
        if self.kind == "claude_code":
            return ["-p", "--output-format", "json", "--json-schema", json.dumps(SCHEMA),
                    "--model", self.model, "--permission-mode", "plan"]  # fmt: skip
        if self.kind == "codex":
            return ["exec", "--output-schema", str(work / "schema.json"), "-o",
                    str(work / "answer.json"), "-s", "read-only", "--skip-git-repo-check",
                    "-m", self.model, "-"]  # fmt: skip
        return ["-o", "json", "-m", self.model, "--skip-trust", "--approval-mode", "plan",
                "-p", ""]  # fmt: skip

    def _answer(self, stdout: str, work: Path) -> RawAnswer:
        if self.kind == "codex":
            last = work / "answer.json"
            if last.is_file():
                return RawAnswer(last.read_text())
            lines = [ln for ln in stdout.splitlines() if ln.strip()]
            return RawAnswer(lines[-1] if lines else "")
        try:  # the first JSON value printed (the launcher may add a line after it)
            doc: Any = json.JSONDecoder().raw_decode(stdout[stdout.index("{") :])[0]
        except ValueError:
            raise CliReviewerError(f"{self.kind}: output is not JSON: {stdout[-300:]!r}") from None
        if not isinstance(doc, dict):
            raise CliReviewerError(f"{self.kind}: output is not a JSON object")
        if self.kind == "claude_code":
            if doc.get("is_error"):
                raise CliReviewerError(f"claude: {str(doc.get('result'))[:300]}")
            cost = doc.get("total_cost_usd")
            cost = float(cost) if isinstance(cost, int | float) else None
            structured = doc.get("structured_output")
            if isinstance(structured, dict):
                return RawAnswer(json.dumps(structured), cost)
            return RawAnswer(str(doc.get("result", "")), cost)
        if doc.get("error"):
            raise CliReviewerError(f"gemini: {str(doc['error'])[:300]}")
        return RawAnswer(str(doc.get("response", "")))


async def _checkout(repo: Path, branch: str, sha: str, tree: Path) -> None:
    """A fresh clone of the repository's origin at the PR head, made read-only. Its git
    config and hooks are fleet's own (a new clone): nothing of the agent's checkout is run."""
    url = (await git(repo, "remote", "get-url", "origin")).stdout.strip()
    await git(tree.parent, "clone", "--quiet", "--no-checkout", "--branch", branch, url, str(tree))
    target = sha if sha and not sha.startswith("attempt-") else "HEAD"
    await git(tree, "checkout", "--quiet", "--detach", target)
    await asyncio.to_thread(_read_only, tree)


def _read_only(top: Path) -> None:
    for path in [top, *top.rglob("*")]:
        if path.is_symlink():
            continue
        mode = path.stat().st_mode
        path.chmod(mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def _remove(top: Path) -> None:
    for path in [top, *top.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    shutil.rmtree(top, ignore_errors=True)
