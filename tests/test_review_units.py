"""The review pipeline's parts without the lifecycle: the answer's schema, the aggregation,
Retry-After, the settings' checks and the demo reviewer's line comment."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from pydantic import ValidationError

from fleet_core.config import Settings
from fleet_core.errors import BadInputError
from fleet_core.models import TaskType
from fleet_core.review.aggregate import comments_text, decide
from fleet_core.review.dod import DEFAULT_MAX_BEHIND, max_behind, parse_dod, required
from fleet_core.review.http import retry_after
from fleet_core.review.report import find_report
from fleet_core.review.reviewers import first_added_line
from fleet_core.review.settings import ReviewSettings
from fleet_core.review.store import ReviewRow
from fleet_core.review.verdict import InvalidAnswer, parse_answer

GOOD = '{"verdict": "approve", "summary": "ok", "comments": []}'


def test_a_valid_answer_parses_also_in_a_fence() -> None:
    assert parse_answer(GOOD).verdict.value == "approve"
    fenced = parse_answer("```json\n" + GOOD.replace("approve", "comment") + "\n```")
    assert fenced.verdict.value == "comment"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Looks good!", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"verdict": "lgtm", "summary": "", "comments": []}', "verdict: unknown value 'lgtm'"),
        ('{"verdict": "approve", "comments": []}', "summary: Field required"),
        ('{"verdict": "approve", "summary": "", "comments": [], "x": 1}', "x: Extra inputs"),
        ('{"verdict": "approve", "summary": "", "comments": [{"path": "a", "line": "3", '
         '"body": "b"}]}', "comments.0.line"),
        ('{"verdict": "approve", "summary": "", "comments": [{"path": "a", "line": 0, '
         '"body": "b"}]}', "comments.0.line"),
    ],
)  # fmt: skip
def test_answers_not_for_the_schema_are_refused_saying_where(text: str, message: str) -> None:
    with pytest.raises(InvalidAnswer, match=message):
        parse_answer(text)


def row(verdict: str, **kw: object) -> ReviewRow:
    return ReviewRow("logic", "demo", "demo", verdict, **kw)  # type: ignore[arg-type]


def test_aggregation() -> None:
    approve, change, comment = row("approve"), row("request_changes"), row("comment")
    none: dict[str, object] = {"min_approvals": None, "timed_out": False, "strict": False}
    assert decide([approve] * 3, **none).outcome == "ready"  # type: ignore[arg-type]
    assert decide([approve, approve, change], **none).outcome == "rejected"  # type: ignore[arg-type]
    one_comment = decide([approve, approve, comment], **none)  # type: ignore[arg-type]
    assert (one_comment.outcome, one_comment.approvals) == ("ready", 2)
    assert decide([approve, comment], min_approvals=2, timed_out=False, strict=False).outcome == (
        "rejected"
    )
    late = decide([approve, approve], min_approvals=None, timed_out=True, strict=False)
    assert (late.outcome, late.warning) == ("ready", "review_timed_out")
    strict = decide([approve, approve], min_approvals=None, timed_out=True, strict=True)
    assert (strict.outcome, strict.reason) == ("rejected", "review_timeout")
    # changes requested win over a timeout
    assert decide([change], min_approvals=None, timed_out=True, strict=False).reason == (
        "review_rejected"
    )


def test_comments_text_leaves_out_approvals() -> None:
    c = row("request_changes", summary="no test",
            comments=[{"path": "a.py", "line": 3, "body": "test it"}])  # fmt: skip
    assert comments_text([row("approve", summary="fine"), c]) == (
        "- logic (request_changes): no test\n  - a.py:3: test it"
    )


def test_retry_after() -> None:
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert retry_after("7", now) == 7.0
    assert retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert retry_after("soon", now) is None and retry_after(None, now) is None


def test_first_added_line() -> None:
    diff = ("diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -10,3 +10,4 @@ def f():\n"
            " a\n b\n+c\n d\n")  # fmt: skip
    assert first_added_line(diff) == ("x.py", 12)
    assert first_added_line("") == ("README.md", 1)


@pytest.mark.parametrize(
    ("reviews", "field"),
    [
        ({"kinds": "demo"}, "reviews.kinds"),
        ({"kind": "copilot"}, "reviews.kind"),
        ({"focuses": []}, "reviews.focuses"),
        ({"focuses": ["logic", "logic"]}, "reviews.focuses"),
        ({"urls": {"openai": "ftp://x"}}, "reviews.urls"),
        ({"task_types": {"chores": {}}}, "reviews.task_types.chores"),
        ({"repositories": {"/r": {"kind": "nope"}}}, "reviews.repositories./r.kind"),
        ({"cli_timeout_minutes": 0}, "reviews.cli_timeout_minutes"),
    ],
)
def test_bad_review_settings_name_the_field(reviews: dict[str, object], field: str) -> None:
    with pytest.raises(BadInputError) as err:
        ReviewSettings.parse(reviews)
    assert err.value.field == field
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        Settings(reviews=reviews)


@pytest.mark.parametrize(
    "bad", [{"min_approvals": -1}, {"review_timeout_minutes": 0}, {"review_concurrency": 0}]
)
def test_bad_review_limits_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=next(iter(bad))):
        Settings(**bad)


@pytest.mark.parametrize(
    ("dod", "field"),
    [
        ({"default": {"max_behind": -1}}, "dod.default.max_behind"),
        ({"docs": {"max_behind": True}}, "dod.docs.max_behind"),
        ({"feature": {"max_behind": "5"}}, "dod.feature.max_behind"),
        ({"feature": {"behind": 5}}, "dod.feature.behind"),
    ],
)
def test_bad_dod_settings_name_the_field(dod: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError, match=field.replace(".", r"\.")):
        Settings(dod=dod)


def test_max_behind_per_task_type() -> None:
    table = parse_dod({"default": {"max_behind": 5}, "docs": {"max_behind": 0, "ci": False}})
    assert max_behind(table, TaskType.FEATURE) == 5 and max_behind(table, TaskType.DOCS) == 0
    assert max_behind({}, TaskType.FEATURE) == DEFAULT_MAX_BEHIND
    assert required(table, TaskType.DOCS) == {"pr": True, "synced": True, "ci": False,
                                              "reviews": True}  # fmt: skip


def test_a_review_tasks_report_is_the_last_valid_verdict_json() -> None:
    example = '{"verdict": "approve" or "comment", "summary": "..."}'  # the prompt's, not JSON
    first = '{"verdict": "comment", "summary": "draft", "comments": []}'
    last = [
        "```json",
        '{"verdict": "request_changes",',
        ' "summary": "x is wrong",',
        ' "comments": [{"path": "calc.py", "line": 3, "body": "off by one"}]}',
        "```",
    ]
    text = "\n".join(["[demo] reading", example, first, "thinking", *last, "[demo] done"])
    found = find_report(text)
    assert found is not None and found.verdict.value == "request_changes"
    assert [c.line for c in found.comments] == [3]
    assert find_report("\n".join(["no report", example, '{"verdict": "maybe"}'])) is None
