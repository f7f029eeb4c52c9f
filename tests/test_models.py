"""Input models reject bad values and name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet_core.models import SpawnRequest, Tier

GOOD = {"description": "fix it", "repository": "/srv/repo", "task_type": "bug_fix"}

BAD = [
    ("description", {"description": ""}),
    ("description", {"description": "x" * 5001}),
    ("repository", {"repository": "r" * 501}),
    ("task_type", {"task_type": "chores"}),
    ("agent_type", {"agent_type": "copilot"}),
    ("model", {"model": "m" * 101}),
    ("base_branch", {"base_branch": "b" * 201}),
    ("max_retries", {"max_retries": 11}),
    ("max_retries", {"max_retries": -1}),
    ("timeout_minutes", {"timeout_minutes": 4}),
    ("timeout_minutes", {"timeout_minutes": 481}),
    ("context_overrides", {"context_overrides": {"": "x"}}),
    ("context_overrides", {"context_overrides": {"k": "v" * 20_001}}),
    ("surprise", {"surprise": 1}),
]


@pytest.mark.parametrize(("field", "bad"), BAD, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD)])
def test_spawn_request_names_the_bad_field(field: str, bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError) as err:
        SpawnRequest.model_validate({**GOOD, **bad})
    assert [e["loc"][0] for e in err.value.errors()] == [field]


def test_spawn_request_defaults() -> None:
    req = SpawnRequest.model_validate({**GOOD, "description": "  padded  "})
    assert req.description == "padded"
    assert (req.max_retries, req.timeout_minutes, req.agent_type) == (3, 120, None)


def test_tiers_are_ordered() -> None:
    assert Tier.SOVEREIGN.at_least(Tier.BUILDER)
    assert not Tier.OBSERVER.at_least(Tier.PARTICIPANT)
    assert [t.value for t in sorted(Tier, key=lambda t: t.rank)] == [
        "observer", "participant", "builder", "architect", "sovereign"
    ]  # fmt: skip
