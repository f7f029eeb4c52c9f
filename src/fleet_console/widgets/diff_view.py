"""A PR's diff as the task screen's Diff tab shows it: file by file, coloured like a diff
(additions green, removals red, hunk headers cyan), with the reviewers' line comments of the
newest attempt under the lines they are about."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence

from rich.text import Text

from fleet_core.review.store import ReviewRow
from fleet_core.review.view import SYMBOL

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)")
_FILE = re.compile(r"^\+\+\+ b/(.+)$")
VERDICT_STYLE = {"approve": "green", "request_changes": "bold red", "comment": "yellow"}


def comments_by_line(rows: Sequence[ReviewRow]) -> dict[tuple[str, int], list[str]]:
    """(path, new line) → "✗ security: body" for the newest attempt's line comments."""
    newest = max((r.attempt for r in rows), default=0)
    out: dict[tuple[str, int], list[str]] = defaultdict(list)
    for r in rows:
        if r.attempt != newest:
            continue
        for c in r.comments:
            key = (str(c.get("path")), int(c.get("line") or 0))
            out[key].append(f"{SYMBOL.get(r.verdict, '?')} {r.reviewer}: {c.get('body')}")
    return out


def render_diff(diff: str, rows: Sequence[ReviewRow]) -> Text:
    if not diff.strip():
        return Text("the PR changes nothing against its base", style="dim")
    notes = comments_by_line(rows)
    out = Text()
    path, line = "", 0
    for text in diff.splitlines():
        style = ""
        shown: int | None = None
        if text.startswith("diff --git "):
            name = text.split(" b/", 1)[-1]
            out.append(f"── {name} " + "─" * max(0, 60 - len(name)) + "\n", style="bold magenta")
            continue
        if m := _FILE.match(text):
            path, style = m[1], "bold"
        elif text.startswith(("--- ", "index ", "new file", "deleted file", "similarity")):
            style = "dim"
        elif m := _HUNK.match(text):
            line, style = int(m[1]), "cyan"
        elif text.startswith("+"):
            shown, style, line = line, "green", line + 1
        elif text.startswith("-"):
            style = "red"
        else:
            shown, line = line, line + 1
        out.append(text + "\n", style=style)
        for note in notes.get((path, shown), []) if shown is not None else []:
            out.append(f"    ▶ {note}\n", style="bold yellow")
    out.rstrip()
    return out
