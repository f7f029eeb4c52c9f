"""The Definition of Done (T-7.6): what must hold for a task to be `ready`, and again when it
is merged (the base may have moved meanwhile).

Items, per task type (settings `dod`, a table per task type or `default`):

    pr       the PR exists
    synced   the PR merges into its base without conflicts (as the forge last said), and is
             not behind its base by more than `max_behind` commits (default 50)
    ci       CI passing, and configured: a repository without a CI command is "CI: not
             configured", which fails unless its `.fleet.toml` says `ci = false` on purpose
    reviews  the review approved it (or timed out: "reviews: timed out", a warning)

`dod = {default = {ci = true, synced = true, reviews = true, max_behind = 50}, docs = {ci =
false}}`: an item set to false is not asked for (shown as "not required")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleet_core.errors import BadInputError, FleetError
from fleet_core.models import CiStatus, TaskRecord, TaskType

if TYPE_CHECKING:
    from fleet_core.conductor import Conductor

ITEMS = ("pr", "synced", "ci", "reviews")
MAX_BEHIND = "max_behind"  # a number, not an item: how far behind its base `synced` allows
DEFAULT_MAX_BEHIND = 50
PASSED_REVIEWS = ("approved", "timed_out", "skipped", "no_answer")
NOT_CONFIGURED = "not configured (.fleet.toml has no `ci`; `ci = false` if on purpose)"
DOD_SETUP = "dod_setup"  # the reason when only the repository's setup keeps the DoD unmet


@dataclass(frozen=True)
class DodItem:
    name: str
    ok: bool
    detail: str
    setup: bool = False  # unmet for the repository's setup: another attempt cannot meet it

    def line(self) -> str:
        return f"{'✓' if self.ok else '✗'} {self.name}: {self.detail}"


@dataclass(frozen=True)
class Dod:
    items: tuple[DodItem, ...]

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)

    @property
    def unmet(self) -> list[DodItem]:
        return [i for i in self.items if not i.ok]

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "items": [asdict(i) for i in self.items]}


def parse_dod(table: Mapping[str, Any]) -> dict[str, dict[str, bool | int]]:
    """Checked: keys `default` or a task type, each a table of ITEMS → true/false, and
    `max_behind` → a whole number of commits."""
    out: dict[str, dict[str, bool | int]] = {}
    known = {"default", *(t.value for t in TaskType)}
    for key, sub in table.items():
        if key not in known:
            raise BadInputError(f"dod.{key}", f"not a task type or `default` ({', '.join(known)})")
        if not isinstance(sub, Mapping):
            raise BadInputError(f"dod.{key}", "must be a table")
        for item, value in sub.items():
            if item == MAX_BEHIND:
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise BadInputError(f"dod.{key}.{item}", "must be a whole number ≥ 0")
                continue
            if item not in ITEMS:
                raise BadInputError(f"dod.{key}.{item}", f"unknown item ({', '.join(ITEMS)})")
            if not isinstance(value, bool):
                raise BadInputError(f"dod.{key}.{item}", "must be true or false")
        out[key] = dict(sub)
    return out


def required(table: Mapping[str, Mapping[str, bool | int]], task_type: TaskType) -> dict[str, bool]:
    merged = _merged(table, task_type)
    return {item: bool(merged.get(item, True)) for item in ITEMS}


def max_behind(table: Mapping[str, Mapping[str, bool | int]], task_type: TaskType) -> int:
    return int(_merged(table, task_type).get(MAX_BEHIND, DEFAULT_MAX_BEHIND))


def _merged(
    table: Mapping[str, Mapping[str, bool | int]], task_type: TaskType
) -> dict[str, bool | int]:
    return {**table.get("default", {}), **table.get(task_type.value, {})}


async def check_dod(c: Conductor, rec: TaskRecord) -> Dod:
    """The DoD of `rec` now (the forge is asked whether the PR still merges cleanly)."""
    wanted = required(c.dod, rec.task_type)
    items: list[DodItem] = []

    def add(name: str, ok: bool, detail: str, setup: bool = False) -> None:
        items.append(DodItem(name, ok or not wanted[name], detail if wanted[name] or ok
                             else f"{detail} (not required)", setup and wanted[name]))  # fmt: skip

    repo = Path(rec.repository)
    add("pr", rec.pr_number is not None, f"#{rec.pr_number}" if rec.pr_number else "no PR")
    add("synced", *(await _synced(c, rec, repo)))
    add("ci", *(await _ci(c, rec, repo)))
    status = rec.review_status or {}
    verdict = str(status.get("verdict") or status.get("state") or "not reviewed")
    names = {"timed_out": "timed out", "changes_requested": "changes requested"}
    shown = names.get(verdict, verdict)
    add("reviews", verdict in PASSED_REVIEWS, shown)
    return Dod(tuple(items))


async def _synced(c: Conductor, rec: TaskRecord, repo: Path) -> tuple[bool, str]:
    if rec.pr_number is None:
        return False, "no PR"
    try:
        forge = await c.forges.for_repo(repo)
        found = await forge.find_prs(repo, [rec.branch])
    except (FleetError, OSError) as exc:
        return False, f"the forge did not answer: {exc}"
    pr = found.get(rec.branch)
    if pr is None:
        return False, "the PR is gone"
    if pr.mergeable is False:
        return False, f"conflicts with {pr.base}"
    limit = max_behind(c.dod, rec.task_type)
    try:
        behind = await forge.behind(repo, pr.base, pr.head_sha or pr.branch)
    except (FleetError, OSError, ValueError) as exc:
        return False, f"cannot tell how far behind {pr.base} it is: {exc}"
    if behind > limit:
        return False, f"behind {pr.base} by {behind} commits (at most {limit})"
    lag = f", {behind} behind" if behind else ""
    if pr.mergeable is None:
        return True, f"no conflicts known with {pr.base} (the forge has not said yet){lag}"
    return True, f"merges cleanly into {pr.base}{lag}"


async def _ci(c: Conductor, rec: TaskRecord, repo: Path) -> tuple[bool, str, bool]:
    """(met, what it says, unmet for the repository's setup)."""
    try:
        config = c.repo_config(repo)
        forge = await c.forges.for_repo(repo)
    except (FleetError, OSError) as exc:
        return False, f"cannot tell: {exc}", False
    if forge.name == "local" and config.ci is False:
        return True, "none, on purpose (ci = false)", False
    if forge.name == "local" and config.ci is None:
        return False, NOT_CONFIGURED, True
    state = rec.ci_status.value if rec.ci_status else "unknown"
    return rec.ci_status is CiStatus.PASSING, state, False
