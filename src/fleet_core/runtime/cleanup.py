"""Removing a worktree without ever losing work: unpushed commits go to a git bundle and
uncommitted changes (untracked files included) to a binary patch, before anything is removed."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from fleet_core.runtime.git import git, is_dirty, unpushed_commits


@dataclass(frozen=True)
class CleanupResult:
    worktree_removed: bool
    branch_deleted: bool
    snapshot_dir: Path | None
    bundle: Path | None
    patch: Path | None
    unpushed: int


async def snapshot(worktree: Path, branch: str, dest: Path) -> tuple[Path | None, Path | None, int]:
    """Write what only this worktree holds to `dest`; returns (bundle, patch, unpushed)."""
    commits = await unpushed_commits(worktree, branch)
    dirty = await is_dirty(worktree)
    if not commits and not dirty:
        return None, None, 0
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    bundle = patch = None
    if commits:
        bundle = dest / "commits.bundle"
        await git(worktree, "bundle", "create", str(bundle), branch, "--not", "--remotes")
    if dirty:
        patch = dest / "uncommitted.patch"
        await git(worktree, "add", "-A")
        diff = await git(worktree, "diff", "--cached", "--binary", "HEAD")
        patch.write_text(diff.stdout)
    head = (await git(worktree, "rev-parse", "HEAD")).stdout.strip()
    (dest / "snapshot.json").write_text(json.dumps({
        "branch": branch, "head": head, "unpushed_commits": commits,
        "bundle": bundle.name if bundle else None, "patch": patch.name if patch else None,
        "taken_at": datetime.now(UTC).isoformat(),
        "restore": [f"git fetch {bundle} {branch}:{branch}" if bundle else None,
                    f"git checkout {branch} && git apply {patch}" if patch else None],
    }, indent=2))  # fmt: skip
    return bundle, patch, len(commits)


async def remove_worktree(
    repo: Path, worktree: Path, branch: str, base_ref: str, snapshots_dir: Path
) -> CleanupResult:
    """Snapshot if needed, remove the worktree, delete the branch only if merged into base."""
    snap_dir = bundle = patch = None
    unpushed = 0
    if worktree.exists():
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        candidate = snapshots_dir / f"{worktree.name}-{stamp}"
        bundle, patch, unpushed = await snapshot(worktree, branch, candidate)
        if bundle or patch:
            snap_dir = candidate
        await git(repo, "worktree", "remove", "--force", str(worktree))
    await git(repo, "worktree", "prune", check=False)
    deleted = False
    merged = await git(repo, "merge-base", "--is-ancestor", branch, base_ref, check=False)
    if merged.returncode == 0:
        deleted = (await git(repo, "branch", "-D", branch, check=False)).returncode == 0
    return CleanupResult(not worktree.exists(), deleted, snap_dir, bundle, patch, unpushed)
