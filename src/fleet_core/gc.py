"""`fleet gc`: remove what ended tasks leave on this host once it is older than the retention
(`gc_retention_days`, or `--older-than`): their checkouts (work only a checkout holds is
snapshotted first, as `fleet delete` does), their run directories (the launcher's files and
kept output), snapshots, and the local forge's CI logs and results. A checkout or run
directory is only touched when its task has ended (or no longer exists); a live task's never.

It also prunes the events of the outbox that are done with, fleet-wide: delivered (not
dead-lettered, no channel's record dead), published to NATS or older than NATS would take, and
older than the retention; their delivery records go with them. Dead letters stay for
`fleet notify status` and `redrive`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from fleet_core.db.database import Tenant
from fleet_core.errors import BadInputError, FleetError
from fleet_core.lifecycle import TERMINAL
from fleet_core.models import TaskRecord
from fleet_core.registry import TaskRegistry

if TYPE_CHECKING:
    from fleet_core.conductor import Conductor

KINDS = ("checkout", "run directory", "snapshot", "CI log")
EVENT_BATCH = 5000  # outbox rows deleted per transaction
_AGE = re.compile(r"^(\d+(?:\.\d+)?)([dhm])$")
_UNIT = {"d": timedelta(days=1), "h": timedelta(hours=1), "m": timedelta(minutes=1)}


def parse_age(text: str, field_name: str = "--older-than") -> timedelta:
    """`14d`, `12h`, `90m` (a number and a unit: days, hours, minutes)."""
    m = _AGE.match(text.strip())
    if m is None:
        raise BadInputError(field_name, f"{text!r} is not an age such as 14d, 12h or 90m")
    return float(m[1]) * _UNIT[m[2]]


@dataclass(frozen=True)
class Item:
    kind: str
    path: Path
    size: int
    task: TaskRecord | None = None


@dataclass
class GcReport:
    older_than: timedelta
    dry_run: bool
    events: int = 0  # outbox events pruned (with their delivery records)
    removed: list[Item] = field(default_factory=list)
    kept: list[tuple[Path, str]] = field(default_factory=list)  # (path, why it stayed)

    @property
    def freed(self) -> int:
        return sum(i.size for i in self.removed)

    def counts(self) -> dict[str, int]:
        return {k: sum(1 for i in self.removed if i.kind == k) for k in KINDS}

    def summary(self) -> str:
        parts = [f"{n} {kind}{'s' if n != 1 else ''}" for kind, n in self.counts().items() if n]
        if self.events:
            parts.append(f"{self.events} delivered event{'s' if self.events != 1 else ''}")
        verb = "would free" if self.dry_run else "freed"
        days = self.older_than / timedelta(days=1)
        what = ", ".join(parts) if parts else "nothing"
        return f"{verb} {human(self.freed)}: {what} (older than {days:g} days)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run,
            "older_than_days": self.older_than / timedelta(days=1),
            "freed_bytes": self.freed,
            "counts": self.counts(),
            "events": self.events,
            "removed": [{"kind": i.kind, "path": str(i.path), "bytes": i.size,
                         "task": str(i.task.id) if i.task else None} for i in self.removed],
            "kept": [{"path": str(p), "why": why} for p, why in self.kept],
        }  # fmt: skip


def human(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


def size_of(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / name).lstat().st_size
    return total


def _mtime(path: Path) -> datetime:
    return datetime.fromtimestamp(path.lstat().st_mtime, UTC)


def _uuid(name: str) -> UUID | None:
    try:
        return UUID(name)
    except ValueError:
        return None


class Collector:
    """What is old enough to go, and (unless a dry run) removing it."""

    def __init__(
        self,
        conductor: Conductor,
        older_than: timedelta,
        *,
        dry_run: bool,
        nats_max_age: timedelta = timedelta(hours=168),
    ) -> None:
        if older_than <= timedelta(0):
            raise BadInputError("--older-than", "must be more than 0")
        self.c = conductor
        self.nats_max_age = nats_max_age
        self.cutoff = datetime.now(UTC) - older_than
        self.report = GcReport(older_than, dry_run)
        self.registry = TaskRegistry(conductor.db, Tenant.admin())
        paths = conductor.runtime.paths
        self.worktrees, self.runs, self.snapshots = paths.worktrees, paths.runs, paths.snapshots
        self.forge_state = conductor.forges.local.state_dir

    async def run(self) -> GcReport:
        await self._checkouts()
        await self._run_dirs()
        await self._snapshots()
        await self._ci_logs()
        await self._events()
        return self.report

    def _ended_before_cutoff(self, rec: TaskRecord) -> bool:
        return rec.status in TERMINAL and (rec.completed_at or rec.updated_at) < self.cutoff

    async def _task_dirs(self, root: Path) -> list[tuple[Path, TaskRecord | None]]:
        found: list[tuple[Path, TaskRecord | None]] = []
        if not root.is_dir():
            return found
        for entry in sorted(root.iterdir()):
            task_id = _uuid(entry.name)
            if task_id is None or not entry.is_dir():
                continue
            found.append((entry, await self.registry.find(task_id)))
        return found

    async def _checkouts(self) -> None:
        for path, rec in await self._task_dirs(self.worktrees):
            if rec is None:
                self.report.kept.append((path, "no task has this checkout (left alone)"))
                continue
            if not self._ended_before_cutoff(rec):
                continue
            if rec.host_id not in (None, self.c.runtime.host_id):
                self.report.kept.append((path, f"task {rec.short_id} is on host {rec.host_id}"))
                continue
            item = Item("checkout", path, await asyncio.to_thread(size_of, path), rec)
            if not self.report.dry_run:
                try:  # snapshots work only the checkout holds, as `fleet delete` does
                    await self.c.runtime.cleanup(
                        rec.id, Path(rec.repository), rec.branch, rec.base_branch
                    )
                except (FleetError, OSError) as exc:
                    self.report.kept.append((path, f"cleanup failed: {exc}"))
                    continue
                if rec.worktree_path:  # (moved meanwhile: the path is gone either way)
                    with contextlib.suppress(FleetError):
                        await self.registry.update_metadata(
                            rec.id, {"worktree_path": None}, expected_version=rec.version
                        )
            self.report.removed.append(item)

    async def _run_dirs(self) -> None:
        for path, rec in await self._task_dirs(self.runs):
            old = _mtime(path) < self.cutoff if rec is None else self._ended_before_cutoff(rec)
            if old:
                await self._remove(Item("run directory", path, size_of(path), rec))

    async def _snapshots(self) -> None:
        if not self.snapshots.is_dir():
            return
        for entry in sorted(self.snapshots.iterdir()):
            if _mtime(entry) < self.cutoff:
                await self._remove(Item("snapshot", entry, size_of(entry)))

    async def _ci_logs(self) -> None:
        """<forge state>/<remote>/ci/<sha>.log and .json (the result: a PR asked about again
        runs its CI again)."""
        if not self.forge_state.is_dir():
            return
        for log in sorted(self.forge_state.glob("*/ci/*.log")):
            if _mtime(log) >= self.cutoff:
                continue
            result = log.with_suffix(".json")
            size = size_of(log) + (size_of(result) if result.exists() else 0)
            await self._remove(Item("CI log", log, size))
            if not self.report.dry_run:
                result.unlink(missing_ok=True)

    async def _events(self) -> None:
        """Done-with outbox events, in batches (their delivery records cascade)."""
        done = """processed_at IS NOT NULL AND dead_at IS NULL AND created_at < $1
                  AND (published_at IS NOT NULL
                       OR created_at < now() - make_interval(secs => $2))
                  AND NOT EXISTS (SELECT 1 FROM fleet_notifications n
                                   WHERE n.outbox_id = o.id AND n.dead_at IS NOT NULL)"""
        args = (self.cutoff, self.nats_max_age.total_seconds())
        if self.report.dry_run:
            async with self.c.db.tx(Tenant.admin()) as conn:
                found = await conn.fetchval(f"SELECT count(*) FROM fleet_outbox o WHERE {done}",
                                            *args)  # fmt: skip
            self.report.events = int(found)
            return
        while True:
            async with self.c.db.tx(Tenant.admin()) as conn:
                status = await conn.execute(
                    f"DELETE FROM fleet_outbox WHERE id IN (SELECT id FROM fleet_outbox o "
                    f"WHERE {done} LIMIT {EVENT_BATCH})", *args,
                )  # fmt: skip
            gone = int(status.split()[-1])
            self.report.events += gone
            if gone < EVENT_BATCH:
                return

    async def _remove(self, item: Item) -> None:
        if not self.report.dry_run:
            path = item.path
            if path.is_dir() and not path.is_symlink():
                await asyncio.to_thread(shutil.rmtree, path, True)
            else:
                path.unlink(missing_ok=True)
            if path.exists():
                self.report.kept.append((path, "could not be removed"))
                return
        self.report.removed.append(item)
