"""The local operator's spawn (the CLI and the console, never the API): a repository whose top
directory belongs to the OS user running fleet is registered for that operator the first time
they spawn in it; a spawn refused as bad input leaves no registration behind."""

from __future__ import annotations

import contextlib

from fleet_core.conductor import Actor, Conductor, SpawnOutcome
from fleet_core.errors import BadInputError, FleetError
from fleet_core.models import SpawnRequest
from fleet_core.repositories import Repository


async def spawn_local(
    conductor: Conductor, actor: Actor, request: SpawnRequest, *, queue: bool = False
) -> tuple[SpawnOutcome, Repository | None]:
    """Spawn as the local operator; also returns the repository if it was registered now."""
    repos = conductor.repositories
    repo, new = await repos.ensure_local(actor.operator_id, request.repository)
    named = request.model_copy(update={"repository": repo.path})
    try:
        out = await conductor.spawn(actor, named, queue=queue)
    except BadInputError:
        if new:  # bad input changes nothing
            with contextlib.suppress(FleetError):
                await repos.remove(repo.name)
        raise
    return out, repo if new else None
