"""A reviewer's answer: the JSON schema every reviewer is asked to follow, and its parsing.

An answer is `{"verdict": "approve" | "request_changes" | "comment", "summary": "...",
"comments": [{"path": "...", "line": N, "body": "..."}]}`; anything else (not JSON, a missing
or unknown field, a wrong type) is an InvalidAnswer naming what is wrong."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_SUMMARY = 4000
MAX_COMMENTS = 50
MAX_BODY = 2000


class Verdict(StrEnum):
    APPROVE = "approve"
    REQUEST_CHANGES = "request_changes"
    COMMENT = "comment"


SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["verdict", "summary", "comments"],
    "properties": {
        "verdict": {"type": "string", "enum": [v.value for v in Verdict]},
        "summary": {"type": "string", "maxLength": MAX_SUMMARY},
        "comments": {
            "type": "array",
            "maxItems": MAX_COMMENTS,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["path", "line", "body"],
                "properties": {
                    "path": {"type": "string"},
                    "line": {"type": "integer", "minimum": 1},
                    "body": {"type": "string", "maxLength": MAX_BODY},
                },
            },
        },
    },
}


class LineComment(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    path: str = Field(min_length=1, max_length=1000)
    line: int = Field(ge=1)
    body: str = Field(min_length=1, max_length=MAX_BODY)


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    verdict: Verdict
    summary: str = Field(max_length=MAX_SUMMARY)
    comments: list[LineComment] = Field(max_length=MAX_COMMENTS)


class InvalidAnswer(ValueError):
    """The reviewer's output is not an answer for the schema."""


_FENCE = re.compile(r"^```(?:json)?\s*\n(.*)\n```\s*$", re.DOTALL)


def parse_answer(text: str | dict[str, Any]) -> Answer:
    """The answer in `text` (JSON, possibly in a ```json fence), or an object already parsed."""
    data: Any = text
    if isinstance(text, str):
        stripped = text.strip()
        if m := _FENCE.match(stripped):
            stripped = m[1].strip()
        try:
            data = json.loads(stripped)
        except ValueError as exc:
            raise InvalidAnswer(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidAnswer(f"not a JSON object: {type(data).__name__}")
    if isinstance(data.get("verdict"), str):
        try:
            data = {**data, "verdict": Verdict(data["verdict"])}
        except ValueError:
            raise InvalidAnswer(f"verdict: unknown value {data['verdict']!r}") from None
    try:
        return Answer.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "answer"
        raise InvalidAnswer(f"{where}: {first['msg']}") from None
