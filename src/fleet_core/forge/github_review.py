"""A reviewer's verdict as a GitHub pull request review, with its line comments.

`gh pr review` takes a body and --approve/--request-changes/--comment but no line comments,
so the review goes through the REST API, the way `gh` documents for what it lacks:

    gh api --method POST repos/OWNER/NAME/pulls/N/reviews --input -

with `{"commit_id", "event": APPROVE | REQUEST_CHANGES | COMMENT, "body", "comments": [{"path",
"line", "side": "RIGHT", "body"}]}` on stdin (never in argv). GitHub answers 422 when the
review cannot stand as asked: fleet's own account opened the PR ("Can not approve your own
pull request", likewise for requesting changes), or a line comment is on a line outside the
diff. Then the same review goes again as a COMMENT (the verdict stays in its body), and if that
is refused too, with the line comments folded into the body, so nothing a reviewer said is
lost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet_core.forge.base import ForgeError, review_text

if TYPE_CHECKING:
    from fleet_core.forge.github import GitHubForge

EVENTS = {"approve": "APPROVE", "request_changes": "REQUEST_CHANGES", "comment": "COMMENT"}
UNPROCESSABLE = "(HTTP 422)"


async def post_review(
    forge: GitHubForge,
    repo: Path,
    pr: int,
    *,
    verdict: str,
    body: str,
    comments: Sequence[Mapping[str, Any]],
    head_sha: str | None,
) -> None:
    gh = await forge._ready()
    owner, name = await forge._slug(repo)
    args = ["api", "--method", "POST", f"repos/{owner}/{name}/pulls/{int(pr)}/reviews",
            "--input", "-"]  # fmt: skip
    lines = [{"path": str(c["path"]), "line": int(c["line"]), "side": "RIGHT",
              "body": str(c["body"])} for c in comments]  # fmt: skip
    event = EVENTS.get(verdict, "COMMENT")
    tries: list[dict[str, Any]] = [{"event": event, "body": body, "comments": lines}]
    if event != "COMMENT":
        tries.append({"event": "COMMENT", "body": body, "comments": lines})
    if lines:
        tries.append({"event": "COMMENT", "body": review_text(body, comments), "comments": []})
    problem = ""
    for doc in tries:
        if head_sha:
            doc["commit_id"] = head_sha
        result = await forge._exec(gh, args, json.dumps(doc).encode())
        if result.returncode == 0:
            return
        problem = (result.stderr.strip() or result.stdout.strip())[-500:]
        if UNPROCESSABLE not in result.stderr:
            break  # not a refusal of this review's shape: trying another shape will not help
    raise ForgeError(f"gh api .../pulls/{pr}/reviews: {problem}")
