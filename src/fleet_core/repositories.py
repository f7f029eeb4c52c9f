"""The repositories agents may work in, and who may use each one (fleet_repositories).

A spawn names a repository granted to its operator, by name or by path; the path of a
request is only compared with the registered paths, never looked up on disk first, so a
caller learns nothing about directories that are not granted to them (one answer:
`RepositoryNotFoundError`). Adding, granting, revoking and removing are admin operations
(the CLI and the API check the caller's tier; the rows are written in admin transactions).

`ensure_local` is the local operator's convenience (CLI and console, never the API): a
repository whose top directory belongs to the OS user running fleet is registered for that
operator the first time they spawn in it.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
from pydantic import BaseModel, ConfigDict

from fleet_core.db.database import Database, Tenant
from fleet_core.errors import (
    BadInputError,
    DeniedError,
    RepositoryConflictError,
    RepositoryNotFoundError,
)
from fleet_core.lifecycle import TERMINAL
from fleet_core.models import OPERATOR_ID_RE
from fleet_core.runtime import git as g

if TYPE_CHECKING:
    from fleet_core.db.database import Conn

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_PATH = 500
AUTO_NAME_TRIES = 20

SELECT = """
SELECT r.id, r.name, r.path, r.created_by, r.created_at,
       coalesce(array_agg(g.operator_id ORDER BY g.operator_id)
                FILTER (WHERE g.operator_id IS NOT NULL), '{}') AS operators
  FROM fleet_repositories r
  LEFT JOIN fleet_repository_grants g ON g.repository_id = r.id
"""


class Repository(BaseModel):
    """A registered repository. `operators` lists the grants the reader may see: all of them
    for an admin, only their own for an operator."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: str
    created_by: str
    created_at: datetime
    operators: list[str]


def _record(row: asyncpg.Record) -> Repository:
    return Repository(
        name=row["name"],
        path=row["path"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        operators=list(row["operators"]),
    )


def validate_name(name: str, field: str = "name") -> str:
    if not NAME_RE.match(name):
        raise BadInputError(
            field,
            f"{name!r} is not a repository name (1-64 of A-Z a-z 0-9 . _ -, starting with a "
            "letter or digit)",
        )
    return name


def validate_operator(operator: str, field: str = "operator") -> str:
    if not OPERATOR_ID_RE.match(operator):
        raise BadInputError(field, f"{operator!r} is not a valid operator id")
    return operator


def name_for(directory: str) -> str:
    """A repository name made from a directory's name (characters a name may not hold
    become '-')."""
    text = re.sub(r"[^A-Za-z0-9._-]+", "-", directory).lstrip("._-")[:64].rstrip("-")
    return text or "repository"


def reference(text: str, field: str = "repository") -> tuple[str, str]:
    """('name', NAME) or ('path', /normalised/path) for what a caller typed; decided from the
    text alone (the disk is not consulted)."""
    if "\0" in text:
        raise BadInputError(field, "must not contain NUL")
    if text.startswith("/"):
        if len(text) > MAX_PATH:
            raise BadInputError(field, f"is longer than {MAX_PATH} characters")
        return "path", os.path.normpath(text)
    if NAME_RE.match(text):
        return "name", text
    raise BadInputError(
        field, f"{text!r} is neither a repository name nor an absolute path to a repository"
    )


class Repositories:
    def __init__(self, db: Database) -> None:
        self.db = db

    # -- reading ---------------------------------------------------------------------------

    async def list_for(self, tenant: Tenant) -> list[Repository]:
        """The repositories `tenant` may use (every one for an admin tenant), by name."""
        async with self.db.tx(tenant) as conn:
            rows = await conn.fetch(f"{SELECT} GROUP BY r.id ORDER BY r.name")
        return [_record(r) for r in rows]

    async def resolve(self, tenant: Tenant, text: str) -> Repository:
        """The repository named `text` (a name or an absolute path) that is granted to
        `tenant`; otherwise RepositoryNotFoundError, the same whatever the reason."""
        kind, key = reference(text)
        found = await self._find(tenant, kind, key)
        if found is None:
            raise RepositoryNotFoundError(text)
        return found

    async def _find(self, tenant: Tenant, kind: str, key: str) -> Repository | None:
        column = "r.name" if kind == "name" else "r.path"
        async with self.db.tx(tenant) as conn:
            row = await conn.fetchrow(f"{SELECT} WHERE {column} = $1 GROUP BY r.id", key)
        return _record(row) if row is not None else None

    async def _named(self, name: str) -> Repository:
        found = await self._find(Tenant.admin(), "name", validate_name(name))
        if found is None:
            raise RepositoryNotFoundError(name, f"no repository named {name!r}")
        return found

    # -- the admin's verbs -------------------------------------------------------------------

    async def add(
        self, path_text: str, *, by: str, name: str | None = None, grants: Iterable[str] = ()
    ) -> Repository:
        """Register the git work tree whose top directory is `path_text` (resolved), named
        `name` or after its directory, granted to `grants`."""
        operators = sorted({validate_operator(op) for op in grants})
        if name is not None:
            validate_name(name)
        top = await top_directory(path_text)
        return await self._insert(top, name or name_for(top.name), by, operators, pick=False)

    async def grant(self, name: str, operator: str, *, by: str) -> tuple[Repository, bool]:
        """Let `operator` use the repository; (repository, whether the grant is new)."""
        validate_operator(operator)
        async with self.db.tx(Tenant.admin()) as conn:
            repo_id = await self._id(conn, name)
            added = await conn.fetchval(
                """INSERT INTO fleet_repository_grants (repository_id, operator_id, granted_by)
                   VALUES ($1, $2, $3) ON CONFLICT DO NOTHING RETURNING true""",
                repo_id,
                operator,
                by,
            )
        return await self._named(name), bool(added)

    async def revoke(self, name: str, operator: str) -> tuple[Repository, bool]:
        """Take the repository away from `operator` (their running tasks keep running; they
        cannot spawn, retry or merge there any more); (repository, whether they had it)."""
        validate_operator(operator)
        async with self.db.tx(Tenant.admin()) as conn:
            repo_id = await self._id(conn, name)
            gone = await conn.fetchval(
                """DELETE FROM fleet_repository_grants
                    WHERE repository_id = $1 AND operator_id = $2 RETURNING true""",
                repo_id,
                operator,
            )
        return await self._named(name), bool(gone)

    async def remove(self, name: str) -> Repository:
        """Forget a repository and its grants (never its files). Refused while tasks that are
        not finished work in it."""
        repo = await self._named(name)
        async with self.db.tx(Tenant.admin()) as conn:
            busy = await conn.fetchval(
                """SELECT count(*) FROM fleet_tasks
                    WHERE repository = $1 AND NOT (status = ANY($2::text[]))""",
                repo.path,
                [s.value for s in TERMINAL],
            )
            if busy:
                raise RepositoryConflictError(
                    f"repository {name!r} has {busy} task(s) that are not finished; stop them "
                    "first (fleet stop ID)"
                )
            await conn.execute("DELETE FROM fleet_repositories WHERE name = $1", name)
        return repo

    async def _id(self, conn: Conn, name: str) -> int:
        validate_name(name)
        repo_id = await conn.fetchval("SELECT id FROM fleet_repositories WHERE name = $1", name)
        if repo_id is None:
            raise RepositoryNotFoundError(name, f"no repository named {name!r}")
        return int(repo_id)

    async def _insert(
        self, top: Path, name: str, by: str, operators: list[str], *, pick: bool
    ) -> Repository:
        """Insert the repository and its grants. With `pick`, a taken name gets a suffix
        (name-2, name-3, ...); without, it is a conflict."""
        for attempt in range(1, AUTO_NAME_TRIES + 1 if pick else 2):
            candidate = name if attempt == 1 else f"{name[:60]}-{attempt}"
            try:
                async with self.db.tx(Tenant.admin()) as conn:
                    repo_id = await conn.fetchval(
                        """INSERT INTO fleet_repositories (name, path, created_by)
                           VALUES ($1, $2, $3) RETURNING id""",
                        candidate,
                        str(top),
                        by,
                    )
                    await conn.executemany(
                        """INSERT INTO fleet_repository_grants
                               (repository_id, operator_id, granted_by) VALUES ($1, $2, $3)""",
                        [(repo_id, op, by) for op in operators],
                    )
            except asyncpg.UniqueViolationError as exc:
                if exc.constraint_name == "fleet_repositories_path":
                    taken = await self._find(Tenant.admin(), "path", str(top))
                    as_name = f" as {taken.name!r}" if taken else ""
                    raise RepositoryConflictError(f"{top} is registered already{as_name}") from None
                if pick:
                    continue
                raise RepositoryConflictError(
                    f"a repository named {candidate!r} exists already; choose another name"
                ) from None
            return await self._named(candidate)
        raise RepositoryConflictError(f"no free name like {name!r}; choose one")

    # -- the local operator's convenience ---------------------------------------------------

    async def ensure_local(
        self, operator: str, text: str, *, name: str | None = None
    ) -> tuple[Repository, bool]:
        """The repository `text` names for the local operator, registering it for them first
        if it is a git work tree whose top directory this OS user owns and nobody registered
        it yet; (repository, whether it was registered now). For the CLI and the console
        only: an API caller never reaches the disk through this."""
        tenant = Tenant.operator(operator)
        kind, key = reference(text)
        found = await self._find(tenant, kind, key)
        if found is not None:
            return found, False
        if kind == "name":
            raise RepositoryNotFoundError(text)
        top = await top_directory(key, field="repository", top_only=False)
        found = await self._find(tenant, "path", str(top))
        if found is not None:
            return found, False
        other = await self._find(Tenant.admin(), "path", str(top))
        if other is not None:
            raise RepositoryNotFoundError(
                text,
                f"{top} is registered as {other.name!r} but not granted to {operator}; an "
                f"admin can grant it: fleet repo grant {other.name} {operator}",
            )
        owner = (await asyncio.to_thread(top.stat)).st_uid
        if owner != os.geteuid():
            raise DeniedError(
                f"{top} belongs to uid {owner}, not to this user (uid {os.geteuid()}), so it "
                f"is not registered by itself; an admin can add it: fleet repo add {top} "
                f"--grant {operator}"
            )
        try:
            repo = await self._insert(
                top, name or name_for(top.name), operator, [operator], pick=True
            )
        except RepositoryConflictError:  # registered meanwhile by another process
            return await self.resolve(tenant, str(top)), False
        return repo, True


async def top_directory(text: str, *, field: str = "path", top_only: bool = True) -> Path:
    """The resolved top directory of the git work tree at `text` (an absolute path). With
    `top_only`, a directory inside the work tree is refused instead of climbed out of."""
    if "\0" in text:
        raise BadInputError(field, "must not contain NUL")
    path = Path(text).expanduser()
    if not path.is_absolute():
        raise BadInputError(field, f"{text!r} must be an absolute path")
    try:
        top, _common = await g.repo_paths(path)
    except BadInputError as exc:
        raise BadInputError(field, exc.message) from None
    if len(str(top)) > MAX_PATH:
        raise BadInputError(field, f"{top} is longer than {MAX_PATH} characters")
    if top_only and await asyncio.to_thread(path.resolve) != top:
        raise BadInputError(field, f"{text} is inside the work tree {top}; give its top directory")
    return top
