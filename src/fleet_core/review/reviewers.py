"""Reviewers: what each is asked (a ReviewRequest) and what it answers (RawAnswer, parsed by
the pipeline), and the offline demo reviewer.

The demo reviewer approves, unless the task's description carries `[demo:review-reject-once]`
(the first reviewer requests changes with one line comment on the first attempt, and approves
the retry), `[demo:review-hang]` (it never answers) or `[demo:review-garbage]` (it answers
something that is not JSON)."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass
from typing import Protocol

REJECT_ONCE = "[demo:review-reject-once]"
HANG = "[demo:review-hang]"
GARBAGE = "[demo:review-garbage]"
DEMO_COMMENT = "Add a test that covers this change before it is merged."


@dataclass(frozen=True)
class ReviewRequest:
    focus: str
    description: str
    diff: str
    prompt: str
    attempt: int  # 1 for the task's first attempt
    head_sha: str
    repository: str
    branch: str
    operator_id: str
    agent_type: str  # the task's agent, whose CLI login a CLI reviewer uses


@dataclass(frozen=True)
class RawAnswer:
    text: str
    cost_usd: float | None = None


class Reviewer(Protocol):
    kind: str  # demo, anthropic, openai, gemini, claude_code, codex, gemini_cli
    model: str
    focus: str

    async def ask(self, request: ReviewRequest) -> RawAnswer:
        """The reviewer's raw output; raises (any exception) when it could not answer."""
        ...


class DemoReviewer:
    kind = "demo"
    model = "demo"

    def __init__(self, focus: str, *, lead: bool) -> None:
        self.focus = focus
        self.lead = lead  # the one that requests changes for [demo:review-reject-once]

    async def ask(self, request: ReviewRequest) -> RawAnswer:
        text = request.description
        if HANG in text:
            await asyncio.Event().wait()  # never answers: the review's timeout ends it
        if GARBAGE in text:
            return RawAnswer("I think this looks fine, mostly.")
        if REJECT_ONCE in text and self.lead and request.attempt == 1:
            path, line = first_added_line(request.diff)
            answer = {
                "verdict": "request_changes",
                "summary": f"{self.focus}: the change has no test.",
                "comments": [{"path": path, "line": line, "body": DEMO_COMMENT}],
            }
            return RawAnswer(json.dumps(answer))
        summary = f"{self.focus}: nothing to change."
        return RawAnswer(json.dumps({"verdict": "approve", "summary": summary, "comments": []}))


_FILE = re.compile(r"^\+\+\+ b/(.+)$")
_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)")


def first_added_line(diff: str) -> tuple[str, int]:
    """The file and new-side line number of the diff's first added line (README.md, 1 when the
    diff adds none)."""
    path, line = "README.md", 1
    for text in diff.splitlines():
        if m := _FILE.match(text):
            path = m[1]
        elif m := _HUNK.match(text):
            line = int(m[1])
        elif text.startswith("+") and not text.startswith("+++"):
            return path, line
        elif not text.startswith("-"):
            line += 1
    return path, 1
