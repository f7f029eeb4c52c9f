"""Removing a task's checkout without ever losing work: its branch is collected into the
repository first, commits no remote has go to a git bundle, uncommitted changes (untracked
files included) to a binary patch written byte for byte, and files git ignores (build
output, local settings) to a tar, up to IGNORED_CAP bytes, before anything is removed.

The checkout is agent-written: git runs there only with `checkout.in_checkout` (hooks,
fsmonitor and the like off); the bundle is made in the operator's repository."""

from __future__ import annotations

import asyncio
import json
import shutil
import tarfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fleet_core.runtime import checkout as co
from fleet_core.runtime.contained import Confinement
from fleet_core.runtime.git import git, ref_exists

IGNORED_CAP = 100 * 1024 * 1024  # bytes of ignored files kept in a snapshot
PATCH = "fleet-snapshot.patch"  # written in the checkout's .git by the agent-side diff


@dataclass(frozen=True)
class CleanupResult:
    worktree_removed: bool
    branch_deleted: bool
    snapshot_dir: Path | None
    bundle: Path | None
    patch: Path | None
    unpushed: int
    ignored: Path | None = None  # a tar of the files git ignores (None: there were none)
    ignored_skipped: int = 0  # ignored files left out: the tar would pass IGNORED_CAP


async def snapshot(
    box: Confinement, repo: Path, checkout: Path, objects: list[Path], branch: str, dest: Path
) -> Snapshot:
    """Write what only this checkout holds to `dest`. What reads its working tree runs as
    the agent (`checkout.as_agent`); what reads only refs and objects runs here."""
    data_dir = box.run_root.parent
    ref = f"refs/heads/{branch}"
    commits: list[str] = []
    if await co.head(data_dir, checkout, branch):
        await co.collect(data_dir, repo, checkout, branch)
    if await ref_exists(repo, ref):
        commits = (await git(repo, "rev-list", ref, "--not", "--remotes")).stdout.split()
    # The agent's user reads it: a checkout fleet made unsandboxed (or by hand) is handed over
    # first. A status that fails raises: nothing is removed when its state is unknown.
    await asyncio.to_thread(box.give, checkout)
    status = await co.as_agent(box, checkout, objects, "status", "--porcelain", "-z",
                               "--untracked-files=all", "--ignored=matching")  # fmt: skip
    entries = [e for e in status.stdout.split("\0") if e]
    ignored = [e[3:] for e in entries if e.startswith("!! ")]
    dirty = any(not e.startswith("!! ") for e in entries)
    snap = Snapshot()
    if not commits and not dirty and not ignored:
        return snap
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    if commits:
        snap.bundle = dest / "commits.bundle"
        await git(repo, "bundle", "create", str(snap.bundle), ref, "--not", "--remotes")
        snap.unpushed = len(commits)
    if dirty:
        snap.patch = dest / "uncommitted.patch"
        await co.as_agent(box, checkout, objects, "add", "-A")
        diff = ("diff", "--cached", "--binary", "--no-ext-diff", "--no-textconv", "HEAD")
        await co.as_agent(box, checkout, objects, *diff, f"--output=.git/{PATCH}")
        await asyncio.to_thread(co.take_file, checkout, PATCH, snap.patch)
    if ignored:
        snap.ignored = dest / "ignored.tar"
        snap.ignored_skipped = await asyncio.to_thread(_tar, checkout, ignored, snap.ignored)
    head = (await co.in_checkout(data_dir, checkout, "rev-parse", "HEAD")).stdout.strip()
    (dest / "snapshot.json").write_text(json.dumps({
        "branch": branch, "head": head, "unpushed_commits": commits,
        "bundle": _name(snap.bundle), "patch": _name(snap.patch),
        "ignored": _name(snap.ignored), "ignored_skipped": snap.ignored_skipped,
        "taken_at": datetime.now(UTC).isoformat(),
        "restore": [f"git fetch {snap.bundle} {branch}:{branch}" if snap.bundle else None,
                    f"git checkout {branch} && git apply {snap.patch}" if snap.patch else None,
                    f"tar -xf {snap.ignored}" if snap.ignored else None],
    }, indent=2))  # fmt: skip
    return snap


@dataclass
class Snapshot:
    bundle: Path | None = None
    patch: Path | None = None
    unpushed: int = 0
    ignored: Path | None = None
    ignored_skipped: int = 0

    @property
    def taken(self) -> bool:
        return bool(self.bundle or self.patch or self.ignored)


def _name(path: Path | None) -> str | None:
    return path.name if path else None


def _tar(checkout: Path, names: list[str], dest: Path) -> int:
    """The ignored files (a directory entry: everything under it) into `dest`, never
    following a symlink, until IGNORED_CAP bytes; returns how many were left out."""
    total = skipped = 0
    with tarfile.open(dest, "w") as tar:
        for name in names:
            top = checkout / name
            paths = [top] if not top.is_dir() or top.is_symlink() else sorted(top.rglob("*"))
            for path in paths:
                if path.is_dir() and not path.is_symlink():
                    continue
                size = path.lstat().st_size if not path.is_symlink() else 0
                if total + size > IGNORED_CAP:
                    skipped += 1
                    continue
                total += size
                tar.add(path, arcname=str(path.relative_to(checkout)), recursive=False)
    return skipped


async def remove_checkout(
    box: Confinement,
    repo: Path,
    checkout: Path,
    objects: list[Path],
    branch: str,
    base_ref: str,
    snapshots_dir: Path,
) -> CleanupResult:
    """Snapshot if needed, remove the checkout, delete the branch only if merged into base."""
    snap_dir = None
    snap = Snapshot()
    if checkout.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        candidate = snapshots_dir / f"{checkout.name}-{stamp}"
        snap = await snapshot(box, repo, checkout, objects, branch, candidate)
        if snap.taken:
            snap_dir = candidate
        await asyncio.to_thread(shutil.rmtree, checkout, True)
    deleted = False
    if await ref_exists(repo, f"refs/heads/{branch}"):
        merged = await git(repo, "merge-base", "--is-ancestor", branch, base_ref, check=False)
        if merged.returncode == 0:
            deleted = (await git(repo, "branch", "-D", branch, check=False)).returncode == 0
    return CleanupResult(not checkout.exists(), deleted, snap_dir, snap.bundle, snap.patch,
                         snap.unpushed, snap.ignored, snap.ignored_skipped)  # fmt: skip
