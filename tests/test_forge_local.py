"""The local forge against real git: a work repo whose origin is a bare repository."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from conftest import git, origin_of
from fleet_core.forge.base import ForgeError, ForgeUnavailableError, PrState, ReviewState
from fleet_core.forge.local import LocalForge
from fleet_core.models import CiStatus

CHECK = (
    "import os, pathlib, sys\n"
    "pathlib.Path('CI_MARK').write_text('ran')\n"
    "print('ci-cwd', os.getcwd())\n"
    "broken = pathlib.Path('BROKEN')\n"
    "if broken.exists():\n"
    "    print('BROKEN-MARKER:', broken.read_text().strip())\n"
    "    sys.exit(1)\n"
    "print('all good')\n"
)
CI = [sys.executable, "-c", CHECK]
SLEEP = [sys.executable, "-c", "import time; print('sleeping', flush=True); time.sleep(30)"]


def push(tree: Path, branch: str, files: dict[str, str | None], *, start: str = "main") -> str:
    """Commit `files` (None: delete) on `branch` (created from `start` if new) and push it."""
    exists = subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--verify", "-q", f"refs/heads/{branch}"],
        capture_output=True,
    )
    git(tree, "checkout", "-q", branch) if exists.returncode == 0 else git(
        tree, "checkout", "-q", "-b", branch, start
    )
    for name, text in files.items():
        if text is None:
            (tree / name).unlink()
        else:
            (tree / name).write_text(text)
    git(tree, "add", "-A")
    git(tree, "commit", "-q", "-m", f"{branch}: {sorted(files)}")
    git(tree, "push", "-q", "-f", "origin", branch)
    return git(tree, "rev-parse", "HEAD").strip()


def remote_log(repo: Path, ref: str = "main") -> list[str]:
    return git(origin_of(repo), "log", "--format=%H", ref).split()


def scratch_dirs(state: Path) -> list[Path]:
    return [p for d in state.glob("*/scratch") for p in d.iterdir()]


def worktrees_of(bare: Path) -> list[str]:
    return [
        ln
        for ln in git(bare, "worktree", "list", "--porcelain").splitlines()
        if ln.startswith("worktree ")
    ]


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., LocalForge]]:
    made: list[LocalForge] = []

    def factory(
        command: list[str] | None = CI, *, timeout: float = 60.0, state: Path | None = None
    ) -> LocalForge:
        forge = LocalForge(
            state or tmp_path / "forge", ci_command=lambda _repo: command, ci_timeout_s=timeout
        )
        made.append(forge)
        return forge

    yield factory
    for forge in made:
        await forge.close()


async def test_numbering(repo: Path, make: Callable[..., LocalForge], tmp_path: Path) -> None:
    forge = make()
    sha_a = push(repo, "feat/a", {"a.txt": "a\n"})
    sha_b = push(repo, "feat/b", {"b.txt": "b\n"})
    git(repo, "branch", "-f", "empty", "main")
    git(repo, "push", "-q", "origin", "empty")

    prs = await forge.find_prs(repo, ["feat/a", "feat/b", "empty", "nope", "main"])
    assert set(prs) == {"feat/a", "feat/b"}
    a, b = prs["feat/a"], prs["feat/b"]
    assert (a.number, a.state, a.base, a.head_sha, a.branch) == (
        1,
        PrState.OPEN,
        "main",
        sha_a,
        "feat/a",
    )
    assert (b.number, b.state, b.head_sha) == (2, PrState.OPEN, sha_b)

    again = await forge.find_prs(repo, ["feat/b", "feat/a"])
    assert (again["feat/a"].number, again["feat/b"].number) == (1, 2)
    fresh = make()  # a new instance on the same state dir
    assert (await fresh.find_prs(repo, ["feat/a"]))["feat/a"].number == 1
    push(repo, "feat/c", {"c.txt": "c\n"})
    assert (await fresh.find_prs(repo, ["feat/c", "feat/a"]))["feat/c"].number == 3

    # a second work repo with the same origin sees the same numbers
    other = tmp_path / "other"
    subprocess.run(["git", "clone", "-q", str(origin_of(repo)), str(other)], check=True)
    assert (await forge.find_prs(other, ["feat/b"]))["feat/b"].number == 2

    # a new push moves the head, not the number
    sha_a2 = push(repo, "feat/a", {"a.txt": "a2\n"})
    moved = (await forge.find_prs(repo, ["feat/a"]))["feat/a"]
    assert (moved.number, moved.head_sha, moved.mergeable) == (1, sha_a2, True)

    # a deleted branch is no PR; pushed again, it is the same PR reopened
    git(repo, "push", "-q", "origin", "--delete", "feat/b")
    assert await forge.find_prs(repo, ["feat/b"]) == {}
    git(repo, "push", "-q", "origin", "feat/b")
    assert (await forge.find_prs(repo, ["feat/b"]))["feat/b"].number == 2

    # two instances (as two engine processes would) numbering at once never collide
    push(repo, "feat/d", {"d.txt": "d\n"})
    push(repo, "feat/e", {"e.txt": "e\n"})
    d, e = await asyncio.gather(
        make().find_prs(repo, ["feat/d"]), make().find_prs(repo, ["feat/e"])
    )
    assert {d["feat/d"].number, e["feat/e"].number} == {4, 5}

    counters = list((tmp_path / "forge").glob("*/next.json"))
    assert len(counters) == 1
    assert json.loads(counters[0].read_text())["next"] == 6


async def test_ci_pass_fail_and_new_push(
    repo: Path, make: Callable[..., LocalForge], tmp_path: Path
) -> None:
    forge = make()
    agent = tmp_path / "agent"  # the agent's worktree: pushes from here, CI never runs here
    git(repo, "worktree", "add", "-q", "-b", "fix", str(agent), "main")
    sha1 = push(agent, "fix", {"code.py": "x = 1\n"})
    pr = (await forge.find_prs(repo, ["fix"]))["fix"]

    first = await forge.ci_status(repo, [pr.number, 99])
    assert set(first) == {pr.number}
    assert (first[pr.number].state, first[pr.number].head_sha) == (CiStatus.PENDING, sha1)
    assert (await forge.ci_status(repo, [pr.number]))[pr.number].state == CiStatus.PENDING
    await forge.wait_idle()
    done = (await forge.ci_status(repo, [pr.number]))[pr.number]
    assert (done.state, done.failing, done.review) == (CiStatus.PASSING, (), ReviewState.NONE)
    assert done.url is not None
    log = Path(done.url).read_text()
    assert "all good" in log
    assert str(tmp_path / "forge") in log  # the cwd printed: a scratch worktree of ours
    assert str(agent) not in log

    sha2 = push(agent, "fix", {"BROKEN": "boom-7f3a\n"})
    assert (await forge.ci_status(repo, [pr.number]))[pr.number].state == CiStatus.PENDING
    await forge.wait_idle()
    failed = (await forge.ci_status(repo, [pr.number]))[pr.number]
    assert (failed.state, failed.head_sha, failed.failing) == (CiStatus.FAILING, sha2, ("ci",))
    assert failed.log_excerpt is not None and "BROKEN-MARKER: boom-7f3a" in failed.log_excerpt

    sha3 = push(agent, "fix", {"BROKEN": None})
    pending = (await forge.ci_status(repo, [pr.number]))[pr.number]
    assert (pending.state, pending.head_sha) == (CiStatus.PENDING, sha3)
    await forge.wait_idle()
    assert (await forge.ci_status(repo, [pr.number]))[pr.number].state == CiStatus.PASSING

    # CI ran elsewhere: work repo and agent worktree untouched, scratch worktrees gone
    for tree in (repo, agent):
        assert not (tree / "CI_MARK").exists()
        assert git(tree, "status", "--porcelain") == ""
    assert scratch_dirs(tmp_path / "forge") == []
    assert len(worktrees_of(origin_of(repo))) == 1

    # results are kept: a new instance reports them without running anything
    fresh = make()
    report = (await fresh.ci_status(repo, [pr.number]))[pr.number]
    assert (report.state, report.head_sha) == (CiStatus.PASSING, sha3)
    assert fresh.calls == 2  # the remote's URL, its heads


async def test_ci_timeout(repo: Path, make: Callable[..., LocalForge]) -> None:
    forge = make(SLEEP, timeout=0.5)
    push(repo, "slow", {"s.txt": "s\n"})
    pr = (await forge.find_prs(repo, ["slow"]))["slow"]
    assert (await forge.ci_status(repo, [pr.number]))[pr.number].state == CiStatus.PENDING
    started = time.monotonic()
    await forge.wait_idle()
    assert time.monotonic() - started < 10
    report = (await forge.ci_status(repo, [pr.number]))[pr.number]
    assert report.state == CiStatus.FAILING
    assert report.log_excerpt is not None
    assert "timed out after 0.5 s" in report.log_excerpt
    assert "sleeping" in report.log_excerpt  # what it printed before is kept


async def test_no_ci_command_passes(repo: Path, make: Callable[..., LocalForge]) -> None:
    forge = make(None)
    push(repo, "quiet", {"q.txt": "q\n"})
    pr = (await forge.find_prs(repo, ["quiet"]))["quiet"]
    report = (await forge.ci_status(repo, [pr.number]))[pr.number]
    assert (report.state, report.log_excerpt) == (CiStatus.PASSING, "no CI command configured")


async def test_close_cancels_running_ci(
    repo: Path, make: Callable[..., LocalForge], tmp_path: Path
) -> None:
    forge = make(SLEEP)
    push(repo, "long", {"l.txt": "l\n"})
    pr = (await forge.find_prs(repo, ["long"]))["long"]
    await forge.ci_status(repo, [pr.number])
    for _ in range(250):  # until the command is running in its scratch worktree
        if scratch_dirs(tmp_path / "forge") and list((tmp_path / "forge").glob("*/ci/*.log")):
            break
        await asyncio.sleep(0.02)
    assert scratch_dirs(tmp_path / "forge")
    started = time.monotonic()
    await forge.close()
    assert time.monotonic() - started < 10
    assert scratch_dirs(tmp_path / "forge") == []
    assert list((tmp_path / "forge").glob("*/ci/*.run")) == []
    assert len(worktrees_of(origin_of(repo))) == 1
    # nothing was recorded for the cancelled run: a fresh forge runs it again
    again = make(CI)
    assert (await again.ci_status(repo, [pr.number]))[pr.number].state == CiStatus.PENDING
    await again.wait_idle()
    assert (await again.ci_status(repo, [pr.number]))[pr.number].state == CiStatus.PASSING


async def test_ci_claims(repo: Path, make: Callable[..., LocalForge], tmp_path: Path) -> None:
    """A run claimed by a live process is left to it; a dead process's claim is taken over."""
    forge = make()
    sha = push(repo, "claimed", {"c.txt": "c\n"})
    pr = (await forge.find_prs(repo, ["claimed"]))["claimed"]
    # the remote's own directory (the forge's state dir also holds locks/)
    (home,) = [d for d in (tmp_path / "forge").iterdir() if d.name != "locks"]
    ci_dir = home / "ci"
    ci_dir.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (ci_dir / f"{sha}.run").write_text(str(sleeper.pid))
        assert (await forge.ci_status(repo, [pr.number]))[pr.number].state == CiStatus.PENDING
        await forge.wait_idle()
        assert not (ci_dir / f"{sha}.json").exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    # The dead claim is taken over: a run starts (pending), or has already finished when the
    # fast CI command beat the answer (passing); either way it ends passing.
    state = (await forge.ci_status(repo, [pr.number]))[pr.number].state
    assert state in (CiStatus.PENDING, CiStatus.PASSING)
    await forge.wait_idle()
    assert (await forge.ci_status(repo, [pr.number]))[pr.number].state == CiStatus.PASSING
    assert not (ci_dir / f"{sha}.run").exists()


async def test_merge(repo: Path, make: Callable[..., LocalForge], tmp_path: Path) -> None:
    forge = make()
    head = push(repo, "feat", {"new.txt": "new\n"})
    before = remote_log(repo)
    pr = (await forge.find_prs(repo, ["feat"]))["feat"]
    result = await forge.merge(repo, pr.number)
    assert result.merged and result.sha is not None
    log = remote_log(repo)
    assert log[0] == result.sha and head in log and before[0] in log
    origin = origin_of(repo)
    assert git(origin, "log", "-1", "--format=%s", "main").strip() == f"Merge PR #{pr.number}: feat"
    assert git(origin, "show", "main:new.txt") == "new\n"
    merged = (await forge.find_prs(repo, ["feat"]))["feat"]
    assert (merged.number, merged.state) == (pr.number, PrState.MERGED)
    assert "+new" in await forge.diff(repo, pr.number)
    again = await forge.merge(repo, pr.number)
    assert (again.merged, again.sha) == (True, result.sha)
    assert scratch_dirs(tmp_path / "forge") == []
    assert len(worktrees_of(origin)) == 1
    assert git(repo, "status", "--porcelain") == ""


async def test_merge_conflict(repo: Path, make: Callable[..., LocalForge], tmp_path: Path) -> None:
    forge = make()
    push(repo, "one", {"README.md": "first version\n"})
    push(repo, "two", {"README.md": "second version\n"})
    prs = await forge.find_prs(repo, ["one", "two"])
    assert prs["one"].mergeable is True and prs["two"].mergeable is True
    assert (await forge.merge(repo, prs["one"].number)).merged
    tip = remote_log(repo)[0]

    assert (await forge.find_prs(repo, ["two"]))["two"].mergeable is False  # the base moved
    result = await forge.merge(repo, prs["two"].number)
    assert (result.merged, result.sha) == (False, None)
    assert result.reason == "conflict in: README.md"
    assert remote_log(repo)[0] == tip
    assert git(origin_of(repo), "show", "main:README.md") == "first version\n"
    assert (await forge.find_prs(repo, ["two"]))["two"].state == PrState.OPEN
    assert scratch_dirs(tmp_path / "forge") == []
    assert len(worktrees_of(origin_of(repo))) == 1


async def test_squash_and_rebase(repo: Path, make: Callable[..., LocalForge]) -> None:
    forge = make()
    push(repo, "sq", {"s1.txt": "1\n"})
    head = push(repo, "sq", {"s2.txt": "2\n"})
    pr = (await forge.find_prs(repo, ["sq"]))["sq"]
    rebase = await forge.merge(repo, pr.number, method="rebase")
    assert (rebase.merged, rebase.reason) == (False, "rebase is not supported by the local forge")
    result = await forge.merge(repo, pr.number, method="squash")
    assert result.merged
    origin = origin_of(repo)
    parents = git(origin, "log", "-1", "--format=%P", "main").split()
    assert len(parents) == 1 and head not in remote_log(repo)
    assert git(origin, "show", "main:s2.txt") == "2\n"
    # the branch is not an ancestor of main, yet the PR stays merged
    assert (await forge.find_prs(repo, ["sq"]))["sq"].state == PrState.MERGED
    # new commits on the merged branch are a new PR
    push(repo, "sq", {"s3.txt": "3\n"})
    assert (await forge.find_prs(repo, ["sq"]))["sq"].number == pr.number + 1


async def test_merged_outside_the_forge(repo: Path, make: Callable[..., LocalForge]) -> None:
    forge = make()
    head = push(repo, "ff", {"f.txt": "f\n"})
    assert (await forge.find_prs(repo, ["ff"]))["ff"].state == PrState.OPEN
    git(repo, "push", "-q", "origin", f"{head}:refs/heads/main")  # fast-forwarded by hand
    pr = (await forge.find_prs(repo, ["ff"]))["ff"]
    assert (pr.state, pr.head_sha) == (PrState.MERGED, head)


async def test_comment_and_diff(
    repo: Path, make: Callable[..., LocalForge], tmp_path: Path
) -> None:
    forge = make()
    push(repo, "talk", {"t.txt": "hello diff\n"})
    pr = (await forge.find_prs(repo, ["talk"]))["talk"]
    await forge.comment(repo, pr.number, "looks good")
    await forge.comment(repo, pr.number, "second")
    record = json.loads(next((tmp_path / "forge").glob(f"*/prs/{pr.number}.json")).read_text())
    assert [c["body"] for c in record["comments"]] == ["looks good", "second"]
    assert "+hello diff" in await forge.diff(repo, pr.number)
    with pytest.raises(ForgeError):
        await forge.comment(repo, 42, "nobody")
    with pytest.raises(ForgeError):
        await forge.diff(repo, 42)


async def test_bounded_git_commands(repo: Path, make: Callable[..., LocalForge]) -> None:
    forge = make()
    names = [f"many/{i}" for i in range(30)]
    for i, name in enumerate(names):
        git(repo, "checkout", "-q", "-b", name, "main")
        (repo / f"f{i}.txt").write_text(f"{i}\n")
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", name)
    git(repo, "push", "-q", "origin", *names)
    calls = forge.calls
    prs = await forge.find_prs(repo, names)
    assert sorted(pr.number for pr in prs.values()) == list(range(1, 31))
    # get-url, two for-each-ref, and at most MERGE_CHECKS_PER_CALL trial merges
    assert forge.calls - calls <= 3 + LocalForge.MERGE_CHECKS_PER_CALL
    for _ in range(30 // LocalForge.MERGE_CHECKS_PER_CALL + 1):
        calls = forge.calls
        prs = await forge.find_prs(repo, names)
        assert forge.calls - calls <= 3 + LocalForge.MERGE_CHECKS_PER_CALL
    assert all(pr.mergeable is True for pr in prs.values())
    calls = forge.calls
    await forge.find_prs(repo, names)
    assert forge.calls - calls == 3  # everything known: no trial merge
    calls = forge.calls
    await forge.ci_status(repo, [pr.number for pr in prs.values()])
    assert forge.calls - calls == 2  # CI runs themselves happen in the background


async def test_remote_must_be_a_local_bare_repo(
    repo: Path, make: Callable[..., LocalForge], tmp_path: Path
) -> None:
    forge = make()
    push(repo, "x", {"x.txt": "x\n"})
    git(repo, "remote", "set-url", "origin", "https://example.com/x.git")
    with pytest.raises(ForgeUnavailableError, match="not a bare repository"):
        await forge.find_prs(repo, ["x"])
    assert "example.com" in (forge.health() or "")
    git(repo, "remote", "set-url", "origin", "git@example.com:x.git")
    with pytest.raises(ForgeUnavailableError):
        await forge.ci_status(repo, [1])
    git(repo, "remote", "set-url", "origin", str(repo))  # a local repo with a work tree
    with pytest.raises(ForgeUnavailableError):
        await forge.merge(repo, 1)
    git(repo, "remote", "remove", "origin")
    with pytest.raises(ForgeUnavailableError, match="no origin"):
        await forge.find_prs(repo, ["x"])

    git(repo, "remote", "add", "origin", f"file://{origin_of(repo)}")
    assert (await forge.find_prs(repo, ["x"]))["x"].number == 1
    assert forge.health() is None
    assert forge.budget().remaining is None


async def test_each_call_reads_and_writes_only_its_own_prs(
    repo: Path, make: Callable[..., LocalForge], tmp_path: Path
) -> None:
    """One file per PR: a PR whose record is unreadable breaks no call about another PR (a
    single state file would be read, and rewritten, whole by every call)."""
    forge = make()
    for i in range(3):
        push(repo, f"feat/{i}", {f"f{i}.txt": f"{i}\n"})
    prs = await forge.find_prs(repo, ["feat/0", "feat/1", "feat/2"])
    assert [prs[f"feat/{i}"].number for i in range(3)] == [1, 2, 3]
    records = next((tmp_path / "forge").glob("*/prs"))
    assert sorted(p.name for p in records.iterdir()) == ["1.json", "2.json", "3.json"]
    (records / "1.json").write_text("{ not json")
    await forge.comment(repo, 2, "fine")
    assert (await forge.merge(repo, 3)).merged
    assert set(await forge.ci_status(repo, [2, 3])) == {2, 3}
    assert (await forge.find_prs(repo, ["feat/1"]))["feat/1"].number == 2
    assert json.loads((records / "2.json").read_text())["comments"][0]["body"] == "fine"
    with pytest.raises(ForgeError, match=r"prs/1\.json"):
        await forge.ci_status(repo, [1])


async def test_an_earlier_single_state_file_is_split(
    repo: Path, make: Callable[..., LocalForge], tmp_path: Path
) -> None:
    forge = make()
    push(repo, "old", {"o.txt": "o\n"})
    remote = await forge._remote(repo)
    record = {"number": 7, "branch": "old", "base": "main", "state": "open", "comments": []}
    state = {"remote": str(remote.path), "next": 8, "branches": {"old": 7}, "prs": {"7": record}}
    remote.dir.mkdir(parents=True, exist_ok=True)
    (remote.dir / "state.json").write_text(json.dumps(state))
    assert (await forge.find_prs(repo, ["old"]))["old"].number == 7
    assert not (remote.dir / "state.json").exists()
    push(repo, "new", {"n.txt": "n\n"})
    assert (await forge.find_prs(repo, ["new"]))["new"].number == 8


async def test_a_remote_without_head_uses_the_base_branch_and_says_so_once(
    repo: Path, make: Callable[..., LocalForge], caplog: pytest.LogCaptureFixture
) -> None:
    """`git init --bare` names `master` in HEAD; only `main` was pushed: the forge goes on with
    the tasks' base branch and says so once, instead of stalling every task silently."""
    bare = origin_of(repo)
    git(bare, "symbolic-ref", "HEAD", "refs/heads/master")
    forge = make()
    sha = push(repo, "feat/a", {"a.txt": "a\n"})
    git(repo, "checkout", "-q", "main")
    with caplog.at_level("WARNING", logger="fleet_core.forge.local"):
        prs = await forge.find_prs(repo, ["feat/a"])
        again = await forge.find_prs(repo, ["feat/a"])
    assert (prs["feat/a"].number, prs["feat/a"].base, prs["feat/a"].head_sha) == (1, "main", sha)
    assert again["feat/a"].number == 1 and forge.health() is None
    assert forge.headless == {bare: "main"}
    said = [r.getMessage() for r in caplog.records if "no HEAD branch" in r.getMessage()]
    assert len(said) == 1 and "uses the tasks' base branch 'main'" in said[0]
    reports = await forge.ci_status(repo, [1])
    assert reports[1].head_sha == sha
    assert (await forge.merge(repo, 1)).merged
    assert sha in remote_log(repo, "main")  # merged into the base it used
    # With neither the base nor main/master on the remote, it is one clear error.
    git(bare, "branch", "-m", "main", "trunk")
    with pytest.raises(ForgeUnavailableError, match="has no HEAD branch, and none of main"):
        await forge.find_prs(repo, ["feat/a"])
