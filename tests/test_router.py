"""The model router: reason codes, agent-type constraints, circuit breakers and config."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import pytest

from fleet_core.errors import BadInputError
from fleet_core.models import AgentType, TaskType
from fleet_core.router import MAX_OTHER_BREAKERS, ModelChoice, ModelRouter, Route, RouteReason

OPUS = "claude-opus-4-6"
SONNET = "claude-sonnet-4-5"
CODEX = "gpt-5.5"
GEMINI = "gemini-2.5-pro"
ALL_DEFAULT_MODELS = (OPUS, SONNET, CODEX, GEMINI)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fail(router: ModelRouter, model: str, times: int) -> None:
    for _ in range(times):
        router.record_failure(model)


def test_reason_values() -> None:
    assert [r.value for r in RouteReason] == [
        "explicit_override",
        "reputation_weighted",
        "task_type_default",
        "agent_type_default",
        "fallback",
    ]


@pytest.mark.parametrize(
    ("task_type", "agent_type", "model"),
    [
        (TaskType.BUG_FIX, AgentType.CLAUDE_CODE, OPUS),
        (TaskType.FEATURE, AgentType.CLAUDE_CODE, OPUS),
        (TaskType.REFACTOR, AgentType.CODEX, CODEX),
        (TaskType.REVIEW, AgentType.GEMINI, GEMINI),
        (TaskType.DOCS, AgentType.CLAUDE_CODE, SONNET),
    ],
)
def test_task_type_defaults(task_type: TaskType, agent_type: AgentType, model: str) -> None:
    route = ModelRouter().route(task_type)
    assert (route.agent_type, route.model, route.reason) == (
        agent_type,
        model,
        RouteReason.TASK_TYPE_DEFAULT,
    )
    assert route.detail == f"default for task type {task_type}"


def test_route_is_frozen() -> None:
    route = ModelRouter().route(TaskType.DOCS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        route.model = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("model", "agent_type"),
    [
        ("claude-3-haiku", AgentType.CLAUDE_CODE),
        ("Sonnet-Next", AgentType.CLAUDE_CODE),
        ("gpt-5", AgentType.CODEX),
        ("o3-pro", AgentType.CODEX),
        ("o4-mini", AgentType.CODEX),
        ("gemini-2.0-flash", AgentType.GEMINI),
        ("demo", AgentType.DEMO),
        ("llama-70b", AgentType.GEMINI),  # unknown name: the review entry's agent type
    ],
)
def test_explicit_override_infers_agent_type(model: str, agent_type: AgentType) -> None:
    route = ModelRouter().route(TaskType.REVIEW, model=model)
    assert route == Route(
        agent_type, model, RouteReason.EXPLICIT_OVERRIDE, "model requested by the caller"
    )


def test_explicit_override_with_agent_type_keeps_both() -> None:
    route = ModelRouter().route(TaskType.REFACTOR, model=OPUS, agent_type=AgentType.AIDER)
    assert (route.agent_type, route.model, route.reason) == (
        AgentType.AIDER,
        OPUS,
        RouteReason.EXPLICIT_OVERRIDE,
    )


def test_explicit_override_beats_reputation() -> None:
    route = ModelRouter().route(TaskType.BUG_FIX, model="gpt-5", reputation=1.0)
    assert (route.model, route.reason) == ("gpt-5", RouteReason.EXPLICIT_OVERRIDE)


def test_explicit_override_strips_whitespace() -> None:
    assert ModelRouter().route(TaskType.DOCS, model="  gpt-5 ").model == "gpt-5"


def test_unavailable_override_is_skipped_with_reason() -> None:
    router = ModelRouter()
    router.set_available("gpt-5", False)
    route = router.route(TaskType.REVIEW, model="gpt-5")
    assert (route.agent_type, route.model, route.reason) == (
        AgentType.GEMINI,
        GEMINI,
        RouteReason.TASK_TYPE_DEFAULT,
    )
    assert route.detail == "default for task type review; skipped: override gpt-5 unavailable"


def test_override_with_open_circuit_is_skipped() -> None:
    router = ModelRouter(clock=FakeClock())
    fail(router, "gpt-5", 3)
    route = router.route(TaskType.DOCS, model="gpt-5")
    assert (route.model, route.reason) == (SONNET, RouteReason.TASK_TYPE_DEFAULT)
    assert "override gpt-5 circuit open until t=1300 (300s left)" in route.detail


def test_unusable_override_still_respects_agent_type() -> None:
    router = ModelRouter()
    router.set_available("gpt-5", False)
    route = router.route(TaskType.BUG_FIX, model="gpt-5", agent_type=AgentType.GEMINI)
    assert (route.agent_type, route.model, route.reason) == (
        AgentType.GEMINI,
        GEMINI,
        RouteReason.AGENT_TYPE_DEFAULT,
    )
    assert "override gpt-5 unavailable" in route.detail


@pytest.mark.parametrize(
    ("task_type", "agent_type", "model", "reason"),
    [
        (TaskType.REFACTOR, AgentType.CLAUDE_CODE, SONNET, RouteReason.AGENT_TYPE_DEFAULT),
        (TaskType.REVIEW, AgentType.DEMO, "demo", RouteReason.AGENT_TYPE_DEFAULT),
        (TaskType.BUG_FIX, AgentType.CODEX, CODEX, RouteReason.AGENT_TYPE_DEFAULT),
        (TaskType.DOCS, AgentType.GEMINI, GEMINI, RouteReason.AGENT_TYPE_DEFAULT),
        (TaskType.FEATURE, AgentType.AIDER, SONNET, RouteReason.AGENT_TYPE_DEFAULT),
        (TaskType.REVIEW, AgentType.CUSTOM, "custom", RouteReason.AGENT_TYPE_DEFAULT),
        (TaskType.BUG_FIX, AgentType.CLAUDE_CODE, OPUS, RouteReason.TASK_TYPE_DEFAULT),
        (TaskType.REFACTOR, AgentType.CODEX, CODEX, RouteReason.TASK_TYPE_DEFAULT),
        (TaskType.REVIEW, AgentType.GEMINI, GEMINI, RouteReason.TASK_TYPE_DEFAULT),
    ],
)
def test_requested_agent_type_is_respected(
    task_type: TaskType, agent_type: AgentType, model: str, reason: RouteReason
) -> None:
    route = ModelRouter().route(task_type, agent_type=agent_type)
    assert (route.agent_type, route.model, route.reason) == (agent_type, model, reason)


@pytest.mark.parametrize("reputation", [None, 0.5, 0.95])
@pytest.mark.parametrize("agent_type", list(AgentType))
@pytest.mark.parametrize("task_type", list(TaskType))
def test_every_agent_type_is_respected_for_every_task_type(
    task_type: TaskType, agent_type: AgentType, reputation: float | None
) -> None:
    route = ModelRouter().route(task_type, agent_type=agent_type, reputation=reputation)
    assert route.agent_type == agent_type


@pytest.mark.parametrize("agent_type", list(AgentType))
def test_agent_type_respected_when_nothing_is_usable(agent_type: AgentType) -> None:
    router = ModelRouter()
    for model in (*ALL_DEFAULT_MODELS, "demo", "custom"):
        router.set_available(model, False)
    route = router.route(TaskType.REVIEW, agent_type=agent_type)
    assert route.agent_type == agent_type
    assert route.reason == RouteReason.FALLBACK
    assert route.detail.startswith("every model is unavailable")


def test_agent_type_default_unusable_moves_on_within_the_agent_type() -> None:
    router = ModelRouter()
    router.set_available(SONNET, False)
    route = router.route(TaskType.REFACTOR, agent_type=AgentType.CLAUDE_CODE)
    assert (route.agent_type, route.model, route.reason) == (
        AgentType.CLAUDE_CODE,
        OPUS,
        RouteReason.FALLBACK,
    )
    assert route.detail == "fallback; skipped: claude-sonnet-4-5 unavailable"


@pytest.mark.parametrize("reputation", [0.8, 0.95, 1.0])
def test_reputation_at_threshold_gets_premium(reputation: float) -> None:
    route = ModelRouter().route(TaskType.REVIEW, reputation=reputation)
    assert (route.agent_type, route.model, route.reason) == (
        AgentType.CLAUDE_CODE,
        OPUS,
        RouteReason.REPUTATION_WEIGHTED,
    )
    assert route.detail == f"reputation {reputation} >= 0.8"


@pytest.mark.parametrize("reputation", [0.0, 0.5, 0.79])
def test_reputation_below_threshold_gets_task_default(reputation: float) -> None:
    route = ModelRouter().route(TaskType.REVIEW, reputation=reputation)
    assert (route.model, route.reason) == (GEMINI, RouteReason.TASK_TYPE_DEFAULT)


def test_premium_skipped_when_unavailable() -> None:
    router = ModelRouter()
    router.set_available(OPUS, False)
    route = router.route(TaskType.REVIEW, reputation=0.9)
    assert (route.model, route.reason) == (GEMINI, RouteReason.TASK_TYPE_DEFAULT)
    assert route.detail == "default for task type review; skipped: claude-opus-4-6 unavailable"


def test_premium_skipped_when_incompatible_with_agent_type() -> None:
    route = ModelRouter().route(TaskType.REFACTOR, agent_type=AgentType.CODEX, reputation=0.9)
    assert (route.agent_type, route.model, route.reason) == (
        AgentType.CODEX,
        CODEX,
        RouteReason.TASK_TYPE_DEFAULT,
    )


def test_premium_used_when_agent_type_matches() -> None:
    route = ModelRouter().route(TaskType.DOCS, agent_type=AgentType.CLAUDE_CODE, reputation=0.9)
    assert (route.model, route.reason) == (OPUS, RouteReason.REPUTATION_WEIGHTED)


@pytest.mark.parametrize("reputation", [-0.01, 1.01, math.nan, math.inf, -math.inf])
def test_bad_reputation_is_rejected(reputation: float) -> None:
    with pytest.raises(BadInputError) as info:
        ModelRouter().route(TaskType.BUG_FIX, reputation=reputation)
    assert info.value.field == "reputation"


@pytest.mark.parametrize("model", ["", "   ", "\t\n"])
def test_blank_model_is_rejected(model: str) -> None:
    with pytest.raises(BadInputError) as info:
        ModelRouter().route(TaskType.BUG_FIX, model=model)
    assert info.value.field == "model"


def test_fallback_when_task_default_unavailable() -> None:
    router = ModelRouter()
    router.set_available(CODEX, False)
    route = router.route(TaskType.REFACTOR)
    assert (route.agent_type, route.model, route.reason) == (
        AgentType.CLAUDE_CODE,
        OPUS,
        RouteReason.FALLBACK,
    )
    assert route.detail == "fallback; skipped: gpt-5.5 unavailable"


def test_first_usable_table_model_when_fallback_unusable() -> None:
    clock = FakeClock()
    router = ModelRouter(clock=clock)
    router.set_available(CODEX, False)
    fail(router, OPUS, 3)
    route = router.route(TaskType.REFACTOR)
    assert (route.agent_type, route.model, route.reason) == (
        AgentType.GEMINI,
        GEMINI,
        RouteReason.FALLBACK,
    )
    assert route.detail == (
        "first usable model of the table; skipped: gpt-5.5 unavailable; "
        "claude-opus-4-6 circuit open until t=1300 (300s left)"
    )


def test_nothing_usable_returns_fallback_without_raising() -> None:
    router = ModelRouter()
    for model in (*ALL_DEFAULT_MODELS, "gpt-5"):
        router.set_available(model, False)
    route = router.route(TaskType.REVIEW, model="gpt-5", reputation=0.9)
    assert (route.agent_type, route.model, route.reason) == (
        AgentType.CLAUDE_CODE,
        OPUS,
        RouteReason.FALLBACK,
    )
    assert route.detail.startswith("every model is unavailable; returning the fallback anyway")
    for model in ALL_DEFAULT_MODELS:
        assert f"{model} unavailable" in route.detail
    assert "override gpt-5 unavailable" in route.detail


def test_availability_defaults_to_true_and_toggles() -> None:
    router = ModelRouter()
    assert router.available("never-seen") is True
    router.set_available(GEMINI, False)
    assert router.available(GEMINI) is False
    assert router.route(TaskType.REVIEW).model == OPUS
    router.set_available(GEMINI, True)
    assert router.available(GEMINI) is True
    assert router.route(TaskType.REVIEW).model == GEMINI


def test_breaker_opens_after_exactly_three_failures() -> None:
    router = ModelRouter(clock=FakeClock())
    fail(router, CODEX, 2)
    assert router.breaker_state(CODEX) == "closed"
    assert router.route(TaskType.REFACTOR).model == CODEX
    router.record_failure(CODEX)
    assert router.breaker_state(CODEX) == "open"
    route = router.route(TaskType.REFACTOR)
    assert (route.model, route.reason) == (OPUS, RouteReason.FALLBACK)
    assert route.detail == "fallback; skipped: gpt-5.5 circuit open until t=1300 (300s left)"


def test_breaker_half_open_after_cooldown_then_reopens_on_failure() -> None:
    clock = FakeClock()
    router = ModelRouter(clock=clock)
    fail(router, CODEX, 3)
    clock.advance(299.9)
    assert router.breaker_state(CODEX) == "open"
    assert router.route(TaskType.REFACTOR).model == OPUS
    clock.advance(0.1)
    assert router.breaker_state(CODEX) == "half_open"
    assert router.route(TaskType.REFACTOR).model == CODEX
    router.record_failure(CODEX)  # a single failure while half-open re-opens it
    assert router.breaker_state(CODEX) == "open"
    assert "circuit open until t=1600 (300s left)" in router.route(TaskType.REFACTOR).detail
    clock.advance(300)
    assert router.breaker_state(CODEX) == "half_open"


def test_breaker_closes_on_success_in_half_open_and_resets_count() -> None:
    clock = FakeClock()
    router = ModelRouter(clock=clock)
    fail(router, CODEX, 3)
    clock.advance(300)
    router.record_success(CODEX)
    assert router.breaker_state(CODEX) == "closed"
    fail(router, CODEX, 2)
    assert router.breaker_state(CODEX) == "closed"
    router.record_failure(CODEX)
    assert router.breaker_state(CODEX) == "open"


def test_success_resets_consecutive_failures() -> None:
    router = ModelRouter(clock=FakeClock())
    fail(router, CODEX, 2)
    router.record_success(CODEX)
    fail(router, CODEX, 2)
    assert router.breaker_state(CODEX) == "closed"


def test_failures_while_open_do_not_extend_cooldown() -> None:
    clock = FakeClock()
    router = ModelRouter(clock=clock)
    fail(router, CODEX, 3)
    clock.advance(100)
    fail(router, CODEX, 5)
    clock.advance(200)
    assert router.breaker_state(CODEX) == "half_open"


def test_breaker_is_per_model() -> None:
    router = ModelRouter(clock=FakeClock())
    fail(router, CODEX, 3)
    assert router.breaker_state(GEMINI) == "closed"
    assert router.route(TaskType.REVIEW).model == GEMINI


def test_custom_breaker_threshold_and_cooldown() -> None:
    clock = FakeClock()
    router = ModelRouter(breaker_threshold=1, cooldown_s=10, clock=clock)
    router.record_failure(GEMINI)
    assert router.breaker_state(GEMINI) == "open"
    clock.advance(10)
    assert router.breaker_state(GEMINI) == "half_open"


def test_config_partial_table_overrides_only_given_task_types() -> None:
    router = ModelRouter.from_config(
        {"table": {"refactor": {"agent": "claude_code", "model": SONNET}}}
    )
    refactor = router.route(TaskType.REFACTOR)
    assert (refactor.agent_type, refactor.model) == (AgentType.CLAUDE_CODE, SONNET)
    assert router.route(TaskType.REVIEW).model == GEMINI
    assert router.route(TaskType.BUG_FIX).model == OPUS


def test_config_empty_keeps_defaults() -> None:
    assert ModelRouter.from_config({}).describe() == ModelRouter().describe()


def test_config_overrides_everything() -> None:
    clock = FakeClock()
    router = ModelRouter.from_config(
        {
            "fallback": {"agent": "gemini", "model": "gemini-flash"},
            "premium": {"agent": "codex", "model": "o3"},
            "reputation_threshold": 0.5,
            "breaker_threshold": 1,
            "cooldown_seconds": 10,
            "agent_models": {"codex": "gpt-5", "demo": "demo-2"},
        },
        clock=clock,
    )
    assert router.route(TaskType.BUG_FIX, reputation=0.5).model == "o3"
    assert router.route(TaskType.REVIEW, agent_type=AgentType.CODEX).model == "gpt-5"
    assert router.route(TaskType.REVIEW, agent_type=AgentType.DEMO).model == "demo-2"
    router.record_failure(OPUS)
    fallback = router.route(TaskType.BUG_FIX)
    assert (fallback.agent_type, fallback.model) == (AgentType.GEMINI, "gemini-flash")
    clock.advance(10)
    assert router.route(TaskType.BUG_FIX).model == OPUS


def test_config_builds_route_choices() -> None:
    router = ModelRouter.from_config({"premium": {"agent": "aider", "model": " gpt-5 "}})
    assert router.premium == ModelChoice(AgentType.AIDER, "gpt-5")


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        (
            {"table": {"refactor": {"agent": "cursor", "model": "x"}}},
            "routing.table.refactor.agent",
        ),
        ({"table": {"refactor": {"model": "x"}}}, "routing.table.refactor.agent"),
        ({"table": {"refactor": {"agent": "codex"}}}, "routing.table.refactor.model"),
        ({"table": {"refactor": {"agent": "codex", "model": " "}}}, "routing.table.refactor.model"),
        ({"table": {"refactor": {"agent": "codex", "model": 3}}}, "routing.table.refactor.model"),
        ({"table": {"refactor": "codex"}}, "routing.table.refactor"),
        ({"table": {"testing": {"agent": "codex", "model": "x"}}}, "routing.table.testing"),
        ({"table": ["refactor"]}, "routing.table"),
        ({"fallback": {"agent": "codex", "model": ""}}, "routing.fallback.model"),
        ({"premium": {"agent": ["codex"], "model": "x"}}, "routing.premium.agent"),
        ({"reputation_threshold": 1.5}, "routing.reputation_threshold"),
        ({"reputation_threshold": -0.1}, "routing.reputation_threshold"),
        ({"reputation_threshold": math.nan}, "routing.reputation_threshold"),
        ({"reputation_threshold": "high"}, "routing.reputation_threshold"),
        ({"reputation_threshold": True}, "routing.reputation_threshold"),
        ({"breaker_threshold": 0}, "routing.breaker_threshold"),
        ({"breaker_threshold": 2.5}, "routing.breaker_threshold"),
        ({"breaker_threshold": True}, "routing.breaker_threshold"),
        ({"cooldown_seconds": -1}, "routing.cooldown_seconds"),
        ({"cooldown_seconds": math.inf}, "routing.cooldown_seconds"),
        ({"cooldown_seconds": "5m"}, "routing.cooldown_seconds"),
        ({"agent_models": {"cursor": "x"}}, "routing.agent_models.cursor"),
        ({"agent_models": {"codex": None}}, "routing.agent_models.codex"),
        ({"agent_models": {"codex": "--yolo"}}, "routing.agent_models.codex"),
        ({"table": {"docs": {"agent": "codex", "model": "-m"}}}, "routing.table.docs.model"),
        ({"fallback": {"agent": "codex", "model": "gpt 5"}}, "routing.fallback.model"),
        ({"premium": {"agent": "claude_code", "model": "o;x"}}, "routing.premium.model"),
    ],
)
def test_config_bad_values_name_the_dotted_field(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(BadInputError) as info:
        ModelRouter.from_config(doc)
    assert info.value.field == field


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"tabel": {}}, "routing.tabel"),
        ({"table": {}, "cooldown": 5}, "routing.cooldown"),
        (
            {"table": {"docs": {"agent": "codex", "model": "x", "priority": 1}}},
            "routing.table.docs.priority",
        ),
        ({"fallback": {"agent": "codex", "model": "x", "extra": 1}}, "routing.fallback.extra"),
    ],
)
def test_config_unknown_keys_are_rejected(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(BadInputError) as info:
        ModelRouter.from_config(doc)
    assert info.value.field == field
    assert info.value.message == "unknown key"


def test_describe_is_json_serialisable() -> None:
    clock = FakeClock()
    router = ModelRouter(clock=clock)
    router.set_available(GEMINI, False)
    fail(router, CODEX, 3)
    router.record_failure(SONNET)
    described = json.loads(json.dumps(router.describe()))
    assert described["table"]["refactor"] == {"agent": "codex", "model": CODEX}
    assert described["table"]["docs"] == {"agent": "claude_code", "model": SONNET}
    assert described["fallback"] == {"agent": "claude_code", "model": OPUS}
    assert described["premium"] == {"agent": "claude_code", "model": OPUS}
    assert described["agent_models"]["demo"] == "demo"
    assert described["reputation_threshold"] == 0.8
    assert described["breaker_threshold"] == 3
    assert described["cooldown_seconds"] == 300.0
    assert described["models"][CODEX] == {"available": True, "breaker": "open", "failures": 3}
    assert described["models"][SONNET] == {"available": True, "breaker": "closed", "failures": 1}
    assert described["models"][GEMINI] == {"available": False, "breaker": "closed", "failures": 0}
    assert sorted(described["models"]) == sorted({*ALL_DEFAULT_MODELS, "demo", "custom"})
    clock.advance(300)
    assert router.describe()["models"][CODEX]["breaker"] == "half_open"


def test_an_explicit_model_is_validated_like_everywhere_else() -> None:
    with pytest.raises(BadInputError) as info:
        ModelRouter().route(TaskType.DOCS, model="--dangerously-skip-permissions")
    assert info.value.field == "model"


def test_breakers_of_made_up_model_names_are_bounded() -> None:
    """Callers choose model names: their breakers stay a bounded set (the least recently failed
    dropped first), while the configured models' breakers are never dropped."""
    router = ModelRouter(clock=FakeClock())
    configured = router.table[TaskType.FEATURE].model
    fail(router, configured, router.breaker_threshold)
    names = [f"made-up-{i}" for i in range(MAX_OTHER_BREAKERS * 4)]
    for name in names:
        fail(router, name, router.breaker_threshold)
    models = router.describe()["models"]
    made_up = [m for m in models if m.startswith("made-up-")]
    assert made_up == sorted(names[-MAX_OTHER_BREAKERS:])
    assert router.breaker_state(configured) == "open"
    assert router.breaker_state(names[-1]) == "open"
    assert router.breaker_state(names[0]) == "closed"  # dropped: it starts over
