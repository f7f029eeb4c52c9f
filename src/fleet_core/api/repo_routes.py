"""The routes under /api/fleet/repos: the repositories granted to the caller, and the admin's
verbs to register them and to grant them to operators. The API never registers a repository
by itself and never says whether a path exists: a spawn on a repository that is not granted
to the caller is one 404 (`repository_not_found`), whatever the path is."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from fleet_core.api.errors import responses
from fleet_core.api.identity import ADMIN_TIER, at_least
from fleet_core.conductor import Actor
from fleet_core.engine import Engine
from fleet_core.errors import DeniedError
from fleet_core.models import OPERATOR_ID_RE, Tier
from fleet_core.repositories import NAME_RE, Repositories, Repository

router = APIRouter(prefix="/api/fleet/repos", tags=["repositories"], responses=responses(401))
Observer = Annotated[Actor, Depends(at_least(Tier.OBSERVER))]
Admin = Annotated[Actor, Depends(at_least(ADMIN_TIER))]
RepoName = Annotated[str, Path(pattern=NAME_RE.pattern, description="the repository's name")]
OperatorId = Annotated[str, Path(pattern=OPERATOR_ID_RE.pattern)]
ADMIN = responses(400, 403, 404, 409)


class NewRepository(BaseModel):
    """A git work tree on the server's disk: its top directory, a name (default: the
    directory's) and the operators who may use it."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    path: str = Field(min_length=1, max_length=500)
    name: str | None = Field(default=None, pattern=NAME_RE.pattern)
    grants: list[Annotated[str, Field(pattern=OPERATOR_ID_RE.pattern)]] = Field(
        default_factory=list, max_length=100
    )


class NewGrant(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    operator: str = Field(pattern=OPERATOR_ID_RE.pattern)


def repositories(request: Request) -> Repositories:
    engine: Engine = request.app.state.engine
    return engine.conductor.repositories


@router.get("", response_model=list[Repository], responses=responses(400, 403))
async def list_repos(request: Request, actor: Observer, all: bool = False) -> Any:
    """The repositories granted to the caller (every one with `all`, admins only); of the
    grants, a caller sees only their own."""
    tenant = actor.tenant
    if all:
        if not actor.tier.at_least(ADMIN_TIER):
            raise DeniedError(f"all=true needs tier {ADMIN_TIER.value}")
        tenant = Actor(actor.operator_id, actor.tier, admin=True).tenant
    return [r.model_dump(mode="json") for r in await repositories(request).list_for(tenant)]


@router.post("", status_code=201, response_model=Repository, responses=ADMIN)
async def add_repo(request: Request, body: NewRepository, actor: Admin) -> Any:
    repo = await repositories(request).add(
        body.path, by=actor.operator_id, name=body.name, grants=body.grants
    )
    return repo.model_dump(mode="json")


@router.post("/{name}/grants", response_model=Repository, responses=ADMIN)
async def grant_repo(request: Request, name: RepoName, body: NewGrant, actor: Admin) -> Any:
    repo, _new = await repositories(request).grant(name, body.operator, by=actor.operator_id)
    return repo.model_dump(mode="json")


@router.delete("/{name}/grants/{operator}", response_model=Repository, responses=ADMIN)
async def revoke_repo(request: Request, name: RepoName, operator: OperatorId, actor: Admin) -> Any:
    repo, _had = await repositories(request).revoke(name, operator)
    return repo.model_dump(mode="json")


@router.delete("/{name}", response_model=Repository, responses=ADMIN)
async def remove_repo(request: Request, name: RepoName, actor: Admin) -> Any:
    return (await repositories(request).remove(name)).model_dump(mode="json")
