"""What needs the operator, counted for the fleet screen's header line: tasks ready to merge,
failed for good, stalled, and spawns waiting in the queue; each count is a filter (its key or
a click). A paused fleet and a forge that does not answer are said there too."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from uuid import UUID

from rich.markup import escape

from fleet_core.lifecycle import TaskStatus
from fleet_core.models import TaskRecord

S = TaskStatus


@dataclass(frozen=True)
class Need:
    name: str
    key: str
    label: str
    style: str


NEEDS = (
    Need("ready", "1", "ready to merge", "green"),
    Need("failed", "2", "failed for good", "red"),
    Need("stalled", "3", "stalled", "yellow"),
    Need("queued", "4", "queued", "cyan"),
)
BY_NAME = {n.name: n for n in NEEDS}


def predicate(name: str, stalled: set[UUID]) -> Callable[[TaskRecord], bool]:
    """Which tasks a need's filter shows (queued spawns are no tasks yet: the filter shows
    the tasks waiting to start)."""
    if name == "ready":
        return lambda r: r.status is S.READY
    if name == "failed":
        return lambda r: r.status in (S.ABANDONED, S.REJECTED)
    if name == "stalled":
        return lambda r: r.id in stalled and r.status is S.RUNNING
    return lambda r: r.status in (S.PROPOSED, S.RETRYING)


def counts(records: Iterable[TaskRecord], stalled: set[UUID], queued: int) -> dict[str, int]:
    recs = list(records)
    out = {n.name: sum(1 for r in recs if predicate(n.name, stalled)(r)) for n in NEEDS}
    out["queued"] = queued
    return out


def header_markup(
    numbers: dict[str, int],
    active: str | None,
    *,
    paused: str | None = None,
    forge_errors: dict[str, str] | None = None,
) -> str:
    """`[1] ready to merge 2  [2] failed for good 0 ...`, each a link to its filter; the
    active one reversed; then PAUSED and forge problems."""
    parts = []
    for need in NEEDS:
        n = numbers.get(need.name, 0)
        style = need.style if n else "dim"
        if need.name == active:
            style = f"reverse {need.style}"
        parts.append(f"[@click=screen.need('{need.name}')][{style}]\\[{need.key}] "
                     f"{need.label} {n}[/][/]")  # fmt: skip
    line = "  ".join(parts)
    extra = []
    if paused:
        extra.append(f"[bold yellow]PAUSED[/] {escape(paused)} (fleet resume)")
    for repo, error in (forge_errors or {}).items():
        extra.append(f"[bold red]FORGE[/] {escape(repo)}: {escape(error)}")
    return "\n".join([line, *extra])
