"""The rows of the task screen's Reviews tab: the review as a whole, the Definition of Done's
checklist, then each verdict (newest attempt first) with its symbol, summary and comments."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from fleet_core.models import TaskRecord
from fleet_core.review.store import ReviewRow
from fleet_core.review.view import SYMBOL, summary_text


def _one_line(value: Any) -> str:
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    return " ".join(text.split())


def review_rows(rec: TaskRecord, reviews: Sequence[ReviewRow]) -> list[tuple[str, str]]:
    rows = [("review", summary_text(rec.review_status) if rec.review_status else "none yet")]
    dod = (rec.review_status or {}).get("dod")
    if isinstance(dod, dict):
        rows.append(("definition of done", "held" if dod.get("ok") else "NOT met"))
        rows += [(f"  {'✓' if i.get('ok') else '✗'} {i.get('name')}", str(i.get("detail")))
                 for i in dod.get("items", []) if isinstance(i, dict)]  # fmt: skip
    for r in sorted(reviews, key=lambda r: (-r.attempt, r.reviewer)):
        took = f" · {r.duration_ms / 1000:.1f} s" if r.duration_ms is not None else ""
        rows.append((f"{SYMBOL.get(r.verdict, '?')} attempt {r.attempt} {r.reviewer}",
                     f"{r.verdict} · {r.kind}/{r.model}{took}"))  # fmt: skip
        if r.summary:
            rows.append(("", _one_line(r.summary)))
        if r.error:
            rows.append(("", f"({_one_line(r.error)})"))
        rows += [(f"  {c.get('path')}:{c.get('line')}", _one_line(c.get("body")))
                 for c in r.comments]  # fmt: skip
    return rows
