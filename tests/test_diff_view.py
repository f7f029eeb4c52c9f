"""The Diff tab's rendering: code highlighted by its file's language, additions and removals
tinted, header lines told from code lines (a removed SQL comment `-- x` is code), and the
reviewers' line comments under the new side's lines."""

from __future__ import annotations

from rich.text import Text

from fleet_console.widgets.diff_view import render_diff
from fleet_core.review.store import ReviewRow

DIFF = """diff --git a/calc.py b/calc.py
index 1111111..2222222 100644
--- a/calc.py
+++ b/calc.py
@@ -1,3 +1,3 @@
 import math
-def add(a, b): return a - b
+def add(a, b): return a + b  # fixed
diff --git a/schema.sql b/schema.sql
--- a/schema.sql
+++ b/schema.sql
@@ -1,2 +1,1 @@
--- an old comment
 SELECT 1;
\\ No newline at end of file
"""


def spans_over(text: Text, needle: str) -> set[str]:
    start = text.plain.index(needle)
    return {str(s.style) for s in text.spans if s.start <= start < s.end}


def row(comments: list[dict[str, object]]) -> ReviewRow:
    return ReviewRow(reviewer="logic", kind="demo", model="demo", verdict="request_changes",
                     summary="s", comments=comments)  # fmt: skip


def test_code_is_highlighted_by_language_and_lines_are_tinted() -> None:
    text = render_diff(DIFF, [])
    lines = text.plain.splitlines()
    assert "+def add(a, b): return a + b  # fixed" in lines
    assert "bold magenta" in spans_over(text, "def add(a, b): return a + b")  # keyword `def`
    assert any("#16301a" in s for s in spans_over(text, "+def add"))  # an addition's tint
    assert any("#3a1818" in s for s in spans_over(text, "-def add"))  # a removal's tint
    assert "italic bright_black" in spans_over(text, "# fixed")  # a comment
    # In a hunk, `--- an old comment` is a removed line of code (tinted), not a file header.
    assert any("#3a1818" in s for s in spans_over(text, "--- an old comment"))
    assert "dim" in spans_over(text, "\\ No newline")
    assert "dim" in spans_over(text, "--- a/schema.sql")


def test_line_comments_stand_under_their_new_lines() -> None:
    text = render_diff(DIFF, [row([{"path": "calc.py", "line": 2, "body": "add a test"}])])
    lines = text.plain.splitlines()
    at = lines.index("+def add(a, b): return a + b  # fixed")
    assert lines[at + 1] == "    ▶ ✗ logic: add a test"
