"""Repositories are granted, not guessed: the registry of repositories and its grants (real
PostgreSQL, RLS binding the engine's role, real git), and `fleet repo` / `fleet spawn` as a
user runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from conftest import fleet, git, grant_repo
from fleet_core.db.database import Database, Tenant
from fleet_core.errors import (
    BadInputError,
    RepositoryConflictError,
    RepositoryNotFoundError,
)
from fleet_core.repositories import Repositories, name_for
from fleet_core.runtime.paths import RuntimePaths

ALICE, BOB = Tenant.operator("alice"), Tenant.operator("bob")


async def counts(su: asyncpg.Connection) -> tuple[int, int]:
    repos = await su.fetchval("SELECT count(*) FROM fleet_repositories")
    grants = await su.fetchval("SELECT count(*) FROM fleet_repository_grants")
    return int(repos), int(grants)


async def test_add_resolve_and_rls(db: Database, repo: Path) -> None:
    repos = Repositories(db)
    added = await repos.add(str(repo), by="root", grants=["alice", "carol"])
    assert (added.name, added.path, added.created_by) == ("repo", str(repo.resolve()), "root")
    assert added.operators == ["alice", "carol"]  # an admin sees every grant
    # By name, by path, by a path spelled differently (lexically the same).
    for ref in ("repo", str(repo), f"{repo}/", f"{repo}/./"):
        assert (await repos.resolve(ALICE, ref)).name == "repo"
    # alice sees the repository and only her own grant; bob sees nothing at all.
    assert [(r.name, r.operators) for r in await repos.list_for(ALICE)] == [("repo", ["alice"])]
    assert await repos.list_for(BOB) == []
    for ref in ("repo", str(repo)):
        with pytest.raises(RepositoryNotFoundError):
            await repos.resolve(BOB, ref)


async def test_rls_binds_the_engine_role(db: Database, repo: Path, su: asyncpg.Connection) -> None:
    await grant_repo(db, repo, "alice")
    async with db.tx(ALICE) as conn:  # a tenant can read its grant, never write
        assert await conn.fetchval("SELECT count(*) FROM fleet_repository_grants") == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO fleet_repository_grants (repository_id, operator_id, granted_by) "
                "SELECT id, 'bob', 'alice' FROM fleet_repositories"
            )
    async with db.tx(ALICE) as conn:  # RLS hides the rows from DELETE: nothing goes
        assert await conn.execute("DELETE FROM fleet_repositories") == "DELETE 0"
        assert await conn.execute("DELETE FROM fleet_repository_grants") == "DELETE 0"
    async with db.tx(BOB) as conn:
        assert await conn.fetchval("SELECT count(*) FROM fleet_repositories") == 0
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute(
                "INSERT INTO fleet_repositories (name, path, created_by) VALUES ('x', '/x', 'bob')"
            )
    assert await counts(su) == (1, 1)


async def test_grant_and_revoke(db: Database, repo: Path) -> None:
    repos = Repositories(db)
    await repos.add(str(repo), by="root")
    with pytest.raises(RepositoryNotFoundError):
        await repos.resolve(BOB, "repo")
    granted, new = await repos.grant("repo", "bob", by="root")
    assert new and granted.operators == ["bob"]
    assert (await repos.grant("repo", "bob", by="root"))[1] is False  # already granted
    assert (await repos.resolve(BOB, "repo")).path == str(repo.resolve())
    revoked, had = await repos.revoke("repo", "bob")
    assert had and revoked.operators == []
    assert (await repos.revoke("repo", "bob"))[1] is False
    with pytest.raises(RepositoryNotFoundError):
        await repos.resolve(BOB, "repo")
    with pytest.raises(RepositoryNotFoundError, match="no repository named 'nope'"):
        await repos.grant("nope", "bob", by="root")


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"path": "relative"}, "path"),
        ({"path": "/no/such/dir"}, "path"),
        ({"path": "{tmp}"}, "path"),  # a directory, not a repository
        ({"path": "{repo}/sub"}, "path"),  # inside the work tree, not its top
        ({"name": "has space"}, "name"),
        ({"name": "-dash"}, "name"),
        ({"grants": ["alice", "bad op"]}, "operator"),
    ],
)
async def test_bad_input_names_the_field_and_changes_nothing(
    db: Database, repo: Path, su: asyncpg.Connection, tmp_path: Path, kwargs: dict, field: str
) -> None:
    (repo / "sub").mkdir()
    fields = {"path": str(repo), **kwargs}
    path = str(fields.pop("path")).format(tmp=tmp_path, repo=repo)
    with pytest.raises(BadInputError) as err:
        await Repositories(db).add(path, by="root", **fields)
    assert err.value.field == field
    assert await counts(su) == (0, 0)


async def test_names_and_paths_are_unique(
    db: Database, repo: Path, tmp_path: Path, su: asyncpg.Connection
) -> None:
    repos = Repositories(db)
    await repos.add(str(repo), by="root", grants=["alice"])
    with pytest.raises(RepositoryConflictError, match="registered already as 'repo'"):
        await repos.add(str(repo), by="root", name="again")
    other = tmp_path / "elsewhere" / "repo"
    other.mkdir(parents=True)
    git(other, "init", "-q")
    with pytest.raises(RepositoryConflictError, match="named 'repo' exists"):
        await repos.add(str(other), by="root")
    assert (await repos.add(str(other), by="root", name="repo2")).name == "repo2"
    assert await counts(su) == (2, 1)
    assert name_for("my project (old)") == "my-project-old" and name_for("...") == "repository"


async def test_remove_refuses_while_tasks_work_there(
    db: Database, repo: Path, su: asyncpg.Connection
) -> None:
    repos = Repositories(db)
    await repos.add(str(repo), by="root", grants=["alice", "bob"])
    task = await su.fetchval(
        "INSERT INTO fleet_tasks (operator_id, agent_type, model, task_type, description, "
        "branch, repository, status) VALUES ('alice', 'demo', 'm', 'docs', 'd', 'b', $1, "
        "'running') RETURNING id",
        str(repo.resolve()),
    )
    with pytest.raises(RepositoryConflictError, match="1 task"):
        await repos.remove("repo")
    assert await counts(su) == (1, 2)
    await su.execute("UPDATE fleet_tasks SET status = 'cancelled' WHERE id = $1", task)
    assert (await repos.remove("repo")).name == "repo"
    assert await counts(su) == (0, 0)  # the grants went with it
    assert (repo / "README.md").exists()  # the files did not


async def test_ensure_local_registers_once_and_respects_grants(
    db: Database, repo: Path, su: asyncpg.Connection
) -> None:
    repos = Repositories(db)
    (repo / "src").mkdir()
    registered, new = await repos.ensure_local("alice", str(repo / "src"))  # climbs to the top
    assert new and (registered.name, registered.operators) == ("repo", ["alice"])
    again, new = await repos.ensure_local("alice", str(repo))
    assert not new and again.name == "repo"
    assert (await repos.ensure_local("alice", "repo"))[1] is False  # by name too
    # Registered already (for alice): bob gets no grant by spawning there.
    with pytest.raises(RepositoryNotFoundError, match="fleet repo grant repo bob"):
        await repos.ensure_local("bob", str(repo))
    with pytest.raises(RepositoryNotFoundError):
        await repos.ensure_local("bob", "repo")
    assert await counts(su) == (1, 1)


# -- the command line -----------------------------------------------------------------------


def tmux_socket() -> str:
    return RuntimePaths.under(Path(os.environ["FLEET_DATA_DIR"])).tmux_socket


async def test_cli_spawn_registers_a_repository_once(
    su: asyncpg.Connection, repo: Path, tmp_path: Path
) -> None:
    env = {"FLEET_SECRETS": '{"FLEET_DEMO_DELAY": "0"}'}
    args = ["spawn", "--type", "docs", "--agent", "demo"]
    try:
        bad = fleet(*args, "--repo", str(repo), "--base", "nope", "x", **env)
        assert bad.returncode == 2 and "--base" in bad.stderr
        assert await counts(su) == (0, 0)  # bad input registers nothing either
        first = fleet(*args, "--repo", str(repo), "one [demo:hang]", **env)
        assert first.returncode == 0, first.stderr
        assert first.stderr.count("registered") == 1 and "'repo' for alice" in first.stderr
        second = subprocess.run(  # from inside the repository, by its default "."
            [*fleet_argv(), *args, "two [demo:hang]"], cwd=repo, capture_output=True,
            text=True, timeout=120, env={**os.environ, "FLEET_OPERATOR": "alice", **env},
        )  # fmt: skip
        assert second.returncode == 0, second.stderr
        assert "registered" not in second.stderr
        by_name = fleet(*args, "--repo", "repo", "--json", "three [demo:hang]", **env)
        assert by_name.returncode == 0 and by_name.stderr == ""
        assert json.loads(by_name.stdout)["repository"] == str(repo.resolve())
        assert await counts(su) == (1, 1)
        listed = json.loads(fleet("repo", "list", "--json").stdout)
        assert [(r["name"], r["operators"]) for r in listed] == [("repo", ["alice"])]
        # Another local operator does not get alice's repository by spawning in it.
        bob = fleet(*args, "--repo", str(repo), "x", FLEET_OPERATOR="bob", **env)
        assert bob.returncode == 3 and "fleet repo grant repo bob" in bob.stderr
        assert json.loads(fleet("repo", "list", "--json", FLEET_OPERATOR="bob").stdout) == []
    finally:
        subprocess.run(["tmux", "-L", tmux_socket(), "kill-server"], capture_output=True)


def fleet_argv() -> list[str]:
    return [sys.executable, "-m", "fleet_core"]


async def test_cli_repo_verbs(su: asyncpg.Connection, repo: Path, tmp_path: Path) -> None:
    added = fleet("repo", "add", str(repo), "--name", "calc", "--grant", "bob", "--json")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["operators"] == ["bob"]
    assert "calc" in fleet("repo", "list", FLEET_OPERATOR="bob").stdout
    assert "No repositories are granted to alice" in fleet("repo", "list").stdout
    assert [r["name"] for r in json.loads(fleet("repo", "list", "--all", "--json").stdout)] == [
        "calc"
    ]
    assert fleet("repo", "grant", "calc", "alice").stdout.strip() == "granted: calc to alice"
    assert "already granted" in fleet("repo", "grant", "calc", "alice").stdout
    assert "calc" in fleet("repo", "list").stdout
    assert fleet("repo", "revoke", "calc", "bob").returncode == 0
    assert json.loads(fleet("repo", "list", "--json", FLEET_OPERATOR="bob").stdout) == []
    # The admin verbs need the admin tier locally; a lower tier changes nothing.
    for argv in (["add", str(repo)], ["grant", "calc", "bob"], ["revoke", "calc", "alice"],
                 ["remove", "calc"], ["list", "--all"]):  # fmt: skip
        denied = fleet("repo", *argv, FLEET_TIER="architect")
        assert denied.returncode == 4 and "sovereign" in denied.stderr, argv
    assert await counts(su) == (1, 1)
    # Bad input: one line naming what was typed, exit 2, nothing written.
    sub = repo / "sub"
    sub.mkdir()
    for argv, named in (
        (["add", str(tmp_path / "missing")], "PATH"),
        (["add", str(sub)], "PATH"),
        (["add", str(tmp_path), "--name", "x"], "PATH"),
        (["add", str(repo), "--name", "no/slash"], "--name"),
        (["add", str(repo), "--grant", "bad op"], "OPERATOR"),
        (["grant", "calc", "bad op"], "OPERATOR"),
        (["grant", "no/slash", "bob"], "NAME"),
    ):
        bad = fleet("repo", *argv)
        assert bad.returncode == 2, (argv, bad.stderr)
        assert bad.stderr.startswith(f"fleet: {named}:") and bad.stderr.count("\n") == 1
    assert await counts(su) == (1, 1)
    assert fleet("repo", "add", str(repo)).returncode == 5  # its path is registered already
    missing = fleet("repo", "remove", "nope", "--json")
    assert missing.returncode == 3 and json.loads(missing.stderr)["error"] == "repository_not_found"
    assert "its files are untouched" in fleet("repo", "remove", "calc").stdout
    assert await counts(su) == (0, 0)
