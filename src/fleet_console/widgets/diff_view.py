"""A PR's diff as the task screen's Diff tab shows it: file by file, coloured like a diff
(additions on green, removals on red, hunk headers cyan), the code itself highlighted by its
file's language (Pygments, line by line), with the reviewers' line comments of the newest
attempt under the lines they are about."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache

from pygments.lexer import Lexer
from pygments.lexers import get_lexer_for_filename
from pygments.token import Comment, Keyword, Name, Number, String, _TokenType
from pygments.util import ClassNotFound
from rich.text import Text

from fleet_core.review.store import ReviewRow
from fleet_core.review.view import SYMBOL

_HUNK = re.compile(r"^@@ -\d+(?:,\d+)? \+(\d+)")
_FILE = re.compile(r"^\+\+\+ b/(.+)$")
VERDICT_STYLE = {"approve": "green", "request_changes": "bold red", "comment": "yellow"}
TOKEN_STYLE: dict[_TokenType, str] = {
    Comment: "italic bright_black",
    Keyword: "bold magenta",
    String: "yellow",
    Number: "cyan",
    Name.Builtin: "cyan",
    Name.Function: "bold blue",
    Name.Class: "bold blue",
    Name.Decorator: "blue",
}
LINE_STYLE = {"+": ("bold green", "on #16301a"), "-": ("bold red", "on #3a1818"), " ": ("", "")}


@lru_cache(maxsize=64)
def lexer_for(path: str) -> Lexer | None:
    """The file's language by its name; None when Pygments knows none (shown plain)."""
    try:
        return get_lexer_for_filename(path, stripnl=False, ensurenl=False)
    except ClassNotFound:
        return None


def _token_style(kind: _TokenType) -> str:
    while kind not in TOKEN_STYLE and kind.parent is not None:
        kind = kind.parent
    return TOKEN_STYLE.get(kind, "")


def code_line(text: str, path: str) -> Text:
    """One line of a hunk: its marker (+, - or space) coloured, its code highlighted, and the
    whole line tinted for an addition or a removal."""
    marker, code = text[:1], text[1:]
    mark_style, tint = LINE_STYLE.get(marker, ("", ""))
    out = Text(marker, style=mark_style)
    lexer = lexer_for(path)
    if lexer is None:
        out.append(code)
    else:
        for kind, value in lexer.get_tokens(code):
            out.append(value, style=_token_style(kind))
    if tint:
        out.stylize(tint)
    return out


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
    path, line, header = "", 0, False  # header: between a file's `diff --git` and its hunk
    for text in diff.splitlines():
        if text.startswith("diff --git "):
            header, name = True, text.split(" b/", 1)[-1]
            out.append(f"── {name} " + "─" * max(0, 60 - len(name)) + "\n", style="bold magenta")
        elif m := _HUNK.match(text):
            header, line = False, int(m[1])
            out.append(text + "\n", style="cyan")
        elif header and (m := _FILE.match(text)):
            path = m[1]
            out.append(text + "\n", style="bold")
        elif header or text.startswith("\\"):  # index, mode, ---, "\ No newline at end of file"
            out.append(text + "\n", style="dim")
        else:
            shown: int | None = None
            if not text.startswith("-"):  # an added or a context line: the new side's next
                shown, line = line, line + 1
            out.append_text(code_line(text, path))
            out.append("\n")
            for note in notes.get((path, shown), []) if shown is not None else []:
                out.append(f"    ▶ {note}\n", style="bold yellow")
    out.rstrip()
    return out
