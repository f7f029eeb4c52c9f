"""Model router: which agent CLI (agent type) and which model a task runs with, and why.

`ModelRouter.route` tries, in order: the caller's explicit model; the requested agent type's
default model when the task type's default runs elsewhere (a requested agent type is always
respected); the premium model for a reputation at or above the threshold; the task type's
default; the fallback; the first usable model of the table. A model is usable when it is
available and its circuit breaker is not open. If nothing is usable the fallback is returned
anyway and the caller decides. Pure logic: no I/O, the clock is injected.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, TypeVar

from fleet_core.errors import BadInputError
from fleet_core.models import AgentType, TaskType
from fleet_core.runtime.validation import validate_model

__all__ = ["ModelChoice", "ModelRouter", "Route", "RouteReason"]


class RouteReason(StrEnum):
    EXPLICIT_OVERRIDE = "explicit_override"
    REPUTATION_WEIGHTED = "reputation_weighted"
    TASK_TYPE_DEFAULT = "task_type_default"
    AGENT_TYPE_DEFAULT = "agent_type_default"
    FALLBACK = "fallback"


@dataclass(frozen=True)
class ModelChoice:
    agent_type: AgentType
    model: str


@dataclass(frozen=True)
class Route:
    agent_type: AgentType
    model: str
    reason: RouteReason
    detail: str


_OPUS = ModelChoice(AgentType.CLAUDE_CODE, "claude-opus-4-6")
DEFAULT_TABLE: Mapping[TaskType, ModelChoice] = {
    TaskType.BUG_FIX: _OPUS,
    TaskType.FEATURE: _OPUS,
    TaskType.REFACTOR: ModelChoice(AgentType.CODEX, "gpt-5.5"),
    TaskType.REVIEW: ModelChoice(AgentType.GEMINI, "gemini-2.5-pro"),
    TaskType.DOCS: ModelChoice(AgentType.CLAUDE_CODE, "claude-sonnet-4-5"),
}
DEFAULT_AGENT_MODELS: Mapping[AgentType, str] = {
    AgentType.CLAUDE_CODE: "claude-sonnet-4-5",
    AgentType.CODEX: "gpt-5.5",
    AgentType.GEMINI: "gemini-2.5-pro",
    AgentType.AIDER: "claude-sonnet-4-5",
    AgentType.DEMO: "demo",
    AgentType.CUSTOM: "custom",
}
# Substrings of a model name that tell which agent type runs it; the first match wins.
_NAME_HINTS = (
    *((hint, AgentType.CLAUDE_CODE) for hint in ("claude", "sonnet", "opus")),
    *((hint, AgentType.CODEX) for hint in ("codex", "gpt", "o3", "o4")),
    ("gemini", AgentType.GEMINI),
    ("demo", AgentType.DEMO),
)
_CONFIG_KEYS = frozenset(
    {"table", "fallback", "premium", "agent_models"}
    | {"reputation_threshold", "reputation_min_samples", "breaker_threshold", "cooldown_seconds"}
)


# Breakers of models the configuration does not name (a caller's `model` is free text within
# its charset): only this many, the least recently failed dropped first, so made-up names
# cannot grow the router without bound. The configuration's own models always keep theirs.
MAX_OTHER_BREAKERS = 256


@dataclass
class _Breaker:
    failures: int = 0
    open_until: float | None = None


class ModelRouter:
    def __init__(
        self,
        *,
        table: Mapping[TaskType, ModelChoice] | None = None,
        fallback: ModelChoice = _OPUS,
        premium: ModelChoice = _OPUS,
        agent_models: Mapping[AgentType, str] | None = None,
        reputation_threshold: float = 0.8,
        reputation_min_samples: int = 10,
        breaker_threshold: int = 3,
        cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.table = {**DEFAULT_TABLE, **(table or {})}
        self.agent_models = {**DEFAULT_AGENT_MODELS, **(agent_models or {})}
        self.fallback = fallback
        self.premium = premium
        self.reputation_threshold = reputation_threshold
        self.reputation_min_samples = reputation_min_samples
        self.breaker_threshold = breaker_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._available: dict[str, bool] = {}
        self._breakers: OrderedDict[str, _Breaker] = OrderedDict()  # least recent first

    @classmethod
    def from_config(
        cls, doc: Mapping[str, Any], *, clock: Callable[[], float] = time.monotonic
    ) -> ModelRouter:
        """Build a router from a `[routing]` config table; missing keys keep the defaults."""
        doc = _table(doc, "routing", _CONFIG_KEYS)
        return cls(
            table=_entries(doc, "table", TaskType, _choice),
            fallback=_choice(doc["fallback"], "routing.fallback") if "fallback" in doc else _OPUS,
            premium=_choice(doc["premium"], "routing.premium") if "premium" in doc else _OPUS,
            agent_models=_entries(doc, "agent_models", AgentType, _model),
            reputation_threshold=_number(doc, "reputation_threshold", 0.8, 0.0, 1.0),
            reputation_min_samples=int(_number(doc, "reputation_min_samples", 10, 1, 100_000)),
            breaker_threshold=int(_number(doc, "breaker_threshold", 3, 1, math.inf)),
            cooldown_s=_number(doc, "cooldown_seconds", 300.0, 0.0, math.inf),
            clock=clock,
        )

    def route(
        self,
        task_type: TaskType,
        *,
        model: str | None = None,
        agent_type: AgentType | None = None,
        reputation: float | None = None,
        scores: Mapping[str, tuple[float, int]] | None = None,
    ) -> Route:
        """`scores`: model → (reputation score, finished tasks) for this task type (see
        fleet_core.review.reputation): a model below `reputation_threshold` over at least
        `reputation_min_samples` tasks is skipped for the next choice (the caller's own
        model never is)."""
        if reputation is not None and not 0.0 <= reputation <= 1.0:
            raise BadInputError("reputation", f"must be between 0 and 1, got {reputation!r}")
        entry = self.table[task_type]
        skipped: list[str] = []
        seen: set[str] = set()
        if model is not None:
            model = _model(model, "model")
            why = self._unusable(model)
            if why is None:
                agent = agent_type or _agent_for(model, entry.agent_type)
                detail = "model requested by the caller"
                return Route(agent, model, RouteReason.EXPLICIT_OVERRIDE, detail)
            skipped.append(f"override {model} {why}")
            seen.add(model)
        for choice, reason, detail in self._candidates(task_type, agent_type, reputation):
            if choice.model in seen or agent_type not in (None, choice.agent_type):
                continue
            seen.add(choice.model)
            why = self._unusable(choice.model) or self._unproven(choice.model, scores)
            if why is None:
                return Route(choice.agent_type, choice.model, reason, _join(detail, skipped))
            skipped.append(f"{choice.model} {why}")
        last = self.fallback
        if agent_type not in (None, last.agent_type):
            last = ModelChoice(agent_type, self.agent_models[agent_type])
        detail = _join("every model is unavailable; returning the fallback anyway", skipped)
        return Route(last.agent_type, last.model, RouteReason.FALLBACK, detail)

    def _candidates(
        self, task_type: TaskType, agent_type: AgentType | None, reputation: float | None
    ) -> Iterator[tuple[ModelChoice, RouteReason, str]]:
        entry = self.table[task_type]
        if agent_type is not None and agent_type != entry.agent_type:
            own = ModelChoice(agent_type, self.agent_models[agent_type])
            yield own, RouteReason.AGENT_TYPE_DEFAULT, f"default model of agent type {agent_type}"
        if reputation is not None and reputation >= self.reputation_threshold:
            detail = f"reputation {reputation} >= {self.reputation_threshold}"
            yield self.premium, RouteReason.REPUTATION_WEIGHTED, detail
        yield entry, RouteReason.TASK_TYPE_DEFAULT, f"default for task type {task_type}"
        yield self.fallback, RouteReason.FALLBACK, "fallback"
        for choice in self.table.values():
            yield choice, RouteReason.FALLBACK, "first usable model of the table"
        if agent_type is not None:
            own = ModelChoice(agent_type, self.agent_models[agent_type])
            yield own, RouteReason.FALLBACK, f"default model of agent type {agent_type}"

    def _unproven(self, model: str, scores: Mapping[str, tuple[float, int]] | None) -> str | None:
        """Why the reputation step skips `model`, or None."""
        score, n = (scores or {}).get(model, (1.0, 0))
        if n >= self.reputation_min_samples and score < self.reputation_threshold:
            return f"reputation {score:.2f} < {self.reputation_threshold} over {n} tasks"
        return None

    def _unusable(self, model: str) -> str | None:
        """Why `model` cannot be used right now, or None when it can."""
        if not self.available(model):
            return "unavailable"
        if self.breaker_state(model) == "open":
            until = self._breakers[model].open_until or 0.0
            return f"circuit open until t={until:.0f} ({until - self._clock():.0f}s left)"
        return None

    def set_available(self, model: str, available: bool) -> None:
        self._available[model] = available

    def available(self, model: str) -> bool:
        return self._available.get(model, True)

    def breaker_state(self, model: str) -> str:
        """Return "closed", "open" (not usable) or "half_open" (cool-down over, usable again)."""
        breaker = self._breakers.get(model)
        if breaker is None or breaker.open_until is None:
            return "closed"
        return "open" if self._clock() < breaker.open_until else "half_open"

    def record_failure(self, model: str) -> None:
        state = self.breaker_state(model)
        breaker = self._breakers.setdefault(model, _Breaker())
        self._breakers.move_to_end(model)
        self._bound()
        breaker.failures += 1
        tripped = state == "closed" and breaker.failures >= self.breaker_threshold
        if tripped or state == "half_open":
            breaker.open_until = self._clock() + self.cooldown_s

    def record_success(self, model: str) -> None:
        self._breakers.pop(model, None)

    def configured_models(self) -> set[str]:
        choices = [*self.table.values(), self.fallback, self.premium]
        return {c.model for c in choices} | set(self.agent_models.values())

    def _bound(self) -> None:
        """Drop the least recently failed breakers of models the configuration does not name
        beyond MAX_OTHER_BREAKERS."""
        configured = self.configured_models()
        others = [m for m in self._breakers if m not in configured]
        for model in others[: max(0, len(others) - MAX_OTHER_BREAKERS)]:
            del self._breakers[model]

    def describe(self) -> dict[str, Any]:
        """The effective configuration plus each known model's availability and breaker."""
        models = self.configured_models() | set(self._available) | set(self._breakers)
        return {
            "table": {str(task): _dump(choice) for task, choice in self.table.items()},
            "fallback": _dump(self.fallback),
            "premium": _dump(self.premium),
            "agent_models": {str(agent): model for agent, model in self.agent_models.items()},
            "reputation_threshold": self.reputation_threshold,
            "breaker_threshold": self.breaker_threshold,
            "cooldown_seconds": self.cooldown_s,
            "models": {
                model: {
                    "available": self.available(model),
                    "breaker": self.breaker_state(model),
                    "failures": self._breakers[model].failures if model in self._breakers else 0,
                }
                for model in sorted(models)
            },
        }


def _agent_for(model: str, default: AgentType) -> AgentType:
    name = model.lower()
    return next((agent for hint, agent in _NAME_HINTS if hint in name), default)


def _join(detail: str, skipped: list[str]) -> str:
    return f"{detail}; skipped: {'; '.join(skipped)}" if skipped else detail


def _dump(choice: ModelChoice) -> dict[str, str]:
    return {"agent": str(choice.agent_type), "model": choice.model}


_E = TypeVar("_E", AgentType, TaskType)
_V = TypeVar("_V")


def _member(kind: type[_E], value: Any, path: str) -> _E:
    try:
        return kind(value)
    except ValueError:
        names = ", ".join(kind)
        raise BadInputError(path, f"must be one of {names}, got {value!r}") from None


def _entries(
    doc: Mapping[str, Any], key: str, kind: type[_E], parse: Callable[[Any, str], _V]
) -> dict[_E, _V]:
    """The sub-table doc[key], its keys parsed as `kind` and its values with `parse`."""
    path = f"routing.{key}"
    items = _table(doc.get(key, {}), path).items()
    return {
        _member(kind, name, f"{path}.{name}"): parse(value, f"{path}.{name}")
        for name, value in items
    }


def _table(value: Any, path: str, keys: frozenset[str] | None = None) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise BadInputError(path, f"must be a table, got {value!r}")
    unknown = sorted(set(value) - keys) if keys is not None else []
    if unknown:
        raise BadInputError(f"{path}.{unknown[0]}", "unknown key")
    return value


def _choice(value: Any, path: str) -> ModelChoice:
    entry = _table(value, path, frozenset({"agent", "model"}))
    agent = _member(AgentType, entry.get("agent"), f"{path}.agent")
    return ModelChoice(agent, _model(entry.get("model"), f"{path}.model"))


def _model(value: Any, path: str) -> str:
    return validate_model(value.strip() if isinstance(value, str) else value, path)


def _number(doc: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    """doc[key] (or the default) checked against [low, high]; an int default requires an int."""
    value = doc.get(key, default)
    kind = "an integer" if isinstance(default, int) else "a number"
    ok = isinstance(value, int if isinstance(default, int) else int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value) or not low <= value <= high:
        raise BadInputError(
            f"routing.{key}", f"must be {kind} in [{low:g}, {high:g}], got {value!r}"
        )
    return float(value)
