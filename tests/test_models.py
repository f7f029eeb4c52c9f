"""Input models reject bad values and name the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fleet_core.errors import BadInputError
from fleet_core.models import SpawnRequest, Tier
from fleet_core.runtime.validation import validate_model

GOOD = {"description": "fix it", "repository": "/srv/repo", "task_type": "bug_fix"}

BAD = [
    ("description", {"description": ""}),
    ("description", {"description": "x" * 5001}),
    ("repository", {"repository": "r" * 501}),
    ("task_type", {"task_type": "chores"}),
    ("agent_type", {"agent_type": "copilot"}),
    ("model", {"model": "m" * 101}),
    ("model", {"model": "--dangerously-skip-permissions"}),
    ("model", {"model": "-m"}),
    ("model", {"model": "gpt 5"}),
    ("model", {"model": "x;rm"}),
    ("model", {"model": "{prompt_file}"}),
    ("model", {"model": "mod\u00e8le"}),
    ("model", {"model": "a\nb"}),
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


@pytest.mark.parametrize(
    "name",
    ["claude-sonnet-4-5", "gpt-5.1-codex", "openrouter/anthropic/claude-3.5", "ollama:llama3@q4",
     "a+b", "m" * 100, "  demo  "],
)  # fmt: skip
def test_spawn_request_accepts_model_names(name: str) -> None:
    assert SpawnRequest.model_validate({**GOOD, "model": name}).model == name.strip()


@pytest.mark.parametrize("bad", ["", "-x", "--help", "a b", "m" * 101, "é", None, 3, "x\0"])
def test_one_model_validator_names_the_field(bad: object) -> None:
    with pytest.raises(BadInputError) as err:
        validate_model(bad)
    assert err.value.field == "model" and "not starting with '-'" in err.value.message
    with pytest.raises(BadInputError) as err:
        validate_model(bad, "routing.fallback.model")
    assert err.value.field == "routing.fallback.model"


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
