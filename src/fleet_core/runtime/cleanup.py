"""Removing a task's checkout without ever losing work: its branch is collected into the
repository first, commits no remote has go to a git bundle and uncommitted changes (untracked
files included) to a binary patch, before anything is removed.

The checkout is agent-written: git runs there only with `checkout.in_checkout` (hooks,
fsmonitor and the like off); the bundle is made in the operator's repository."""

from __future__ import annotations

import asyncio
import json
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fleet_core.runtime import checkout as co
from fleet_core.runtime.git import git, ref_exists


@dataclass(frozen=True)
class CleanupResult:
    worktree_removed: bool
    branch_deleted: bool
    snapshot_dir: Path | None
    bundle: Path | None
    patch: Path | None
    unpushed: int


async def snapshot(
    data_dir: Path, repo: Path, checkout: Path, branch: str, dest: Path
) -> tuple[Path | None, Path | None, int]:
    """Write what only this checkout holds to `dest`; returns (bundle, patch, unpushed)."""
    ref = f"refs/heads/{branch}"
    commits: list[str] = []
    if await co.head(data_dir, checkout, branch):
        await co.collect(data_dir, repo, checkout, branch)
    if await ref_exists(repo, ref):
        commits = (await git(repo, "rev-list", ref, "--not", "--remotes")).stdout.split()
    status = await co.in_checkout(data_dir, checkout, "status", "--porcelain",
                                  "--untracked-files=all", check=False)  # fmt: skip
    dirty = status.returncode == 0 and bool(status.stdout.strip())
    if not commits and not dirty:
        return None, None, 0
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    bundle = patch = None
    if commits:
        bundle = dest / "commits.bundle"
        await git(repo, "bundle", "create", str(bundle), ref, "--not", "--remotes")
    if dirty:
        patch = dest / "uncommitted.patch"
        await co.in_checkout(data_dir, checkout, "add", "-A")
        diff = await co.in_checkout(data_dir, checkout, "diff", "--cached", "--binary",
                                    "--no-ext-diff", "--no-textconv", "HEAD")  # fmt: skip
        patch.write_text(diff.stdout)
    head = (await co.in_checkout(data_dir, checkout, "rev-parse", "HEAD")).stdout.strip()
    (dest / "snapshot.json").write_text(json.dumps({
        "branch": branch, "head": head, "unpushed_commits": commits,
        "bundle": bundle.name if bundle else None, "patch": patch.name if patch else None,
        "taken_at": datetime.now(UTC).isoformat(),
        "restore": [f"git fetch {bundle} {branch}:{branch}" if bundle else None,
                    f"git checkout {branch} && git apply {patch}" if patch else None],
    }, indent=2))  # fmt: skip
    return bundle, patch, len(commits)


async def remove_checkout(
    data_dir: Path, repo: Path, checkout: Path, branch: str, base_ref: str, snapshots_dir: Path
) -> CleanupResult:
    """Snapshot if needed, remove the checkout, delete the branch only if merged into base."""
    snap_dir = bundle = patch = None
    unpushed = 0
    if checkout.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        candidate = snapshots_dir / f"{checkout.name}-{stamp}"
        bundle, patch, unpushed = await snapshot(data_dir, repo, checkout, branch, candidate)
        if bundle or patch:
            snap_dir = candidate
        await asyncio.to_thread(shutil.rmtree, checkout, True)
    deleted = False
    if await ref_exists(repo, f"refs/heads/{branch}"):
        merged = await git(repo, "merge-base", "--is-ancestor", branch, base_ref, check=False)
        if merged.returncode == 0:
            deleted = (await git(repo, "branch", "-D", branch, check=False)).returncode == 0
    return CleanupResult(not checkout.exists(), deleted, snap_dir, bundle, patch, unpushed)
