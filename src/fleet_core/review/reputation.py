"""Reputation (T-8.2): how well a (agent type, model, task type) does, from the tasks that
finished with it, as a Beta posterior.

Every finished task is one outcome with a success weight s: merged on its first attempt 1.0,
merged after retries 0.6, merged after a reviewer sent it back 0.4, abandoned 0.0. From the
prior Beta(1, 1): alpha = 1 + sum(s), beta = 1 + sum(1 - s). `score` is the posterior mean
alpha/(alpha+beta) (0.5 for a key with no task: kept for older clients), `confidence`
1 - sd/sd_prior (how far the
posterior has narrowed from the flat prior; null for a cold key) and `n` the tasks counted.
Counted fleet-wide (every operator's tasks: figures per model say nothing of any task)."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from fleet_core.db.database import Database, Tenant
from fleet_core.errors import BadInputError
from fleet_core.models import AgentType, TaskType
from fleet_core.runtime.validation import MODEL_RE

WEIGHTS = {"first": 1.0, "retried": 0.6, "rejected": 0.4, "abandoned": 0.0}
PRIOR_SD = math.sqrt(1 / 12)  # Beta(1, 1)
KEY_RE = re.compile(r"^([a-z_]+):(.+):([a-z_]+)$")

SQL = """
SELECT agent_type, model, task_type,
       count(*) FILTER (WHERE status = 'merged' AND retry_count = 0) AS first,
       count(*) FILTER (WHERE status = 'merged' AND retry_count > 0 AND NOT rejected) AS retried,
       count(*) FILTER (WHERE status = 'merged' AND retry_count > 0 AND rejected) AS rejected,
       count(*) FILTER (WHERE status = 'abandoned') AS abandoned
  FROM (SELECT agent_type, model, task_type, status, retry_count,
               coalesce(jsonb_path_exists(failure_context,
                                          '$.** ? (@ == "review_rejected")'), false) AS rejected
          FROM fleet_tasks WHERE status IN ('merged', 'abandoned')) AS finished
 WHERE ($1::text IS NULL OR agent_type = $1) AND ($2::text IS NULL OR model = $2)
   AND ($3::text IS NULL OR task_type = $3)
 GROUP BY agent_type, model, task_type
 ORDER BY agent_type, model, task_type
"""


@dataclass(frozen=True)
class Reputation:
    agent_type: str
    model: str
    task_type: str
    first: int = 0
    retried: int = 0
    rejected: int = 0
    abandoned: int = 0

    @property
    def key(self) -> str:
        return f"{self.agent_type}:{self.model}:{self.task_type}"

    @property
    def n(self) -> int:
        return self.first + self.retried + self.rejected + self.abandoned

    @property
    def alpha(self) -> float:
        return 1.0 + sum(WEIGHTS[k] * self._count(k) for k in WEIGHTS)

    @property
    def beta(self) -> float:
        return 1.0 + sum((1 - WEIGHTS[k]) * self._count(k) for k in WEIGHTS)

    def _count(self, outcome: str) -> int:
        return int(getattr(self, outcome))

    @property
    def score(self) -> float:
        return round(self.alpha / (self.alpha + self.beta), 4)

    @property
    def confidence(self) -> float | None:
        if self.n == 0:
            return None
        a, b = self.alpha, self.beta
        sd = math.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)))
        return round(1 - sd / PRIOR_SD, 4)

    def answer(self) -> dict[str, Any]:
        """What GET /api/reputation/query answers."""
        return {"score": self.score, "confidence": self.confidence, "n": self.n}

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, **asdict(self), **self.answer()}


def parse_key(text: str, field: str = "routingKey") -> tuple[AgentType, str, TaskType]:
    """`<agent>:<model>:<task_type>`, each part checked; bad input names `field`."""
    m = KEY_RE.match(text or "")
    if m is None:
        raise BadInputError(field, "must be <agent>:<model>:<task_type>")
    try:
        agent = AgentType(m[1])
    except ValueError:
        raise BadInputError(field, f"unknown agent type {m[1]!r}") from None
    try:
        task_type = TaskType(m[3])
    except ValueError:
        raise BadInputError(field, f"unknown task type {m[3]!r}") from None
    if not MODEL_RE.match(m[2]):
        raise BadInputError(field, f"not a model name: {m[2]!r}")
    return agent, m[2], task_type


async def reputations(
    db: Database,
    *,
    agent_type: str | None = None,
    model: str | None = None,
    task_type: str | None = None,
) -> list[Reputation]:
    """The keys with finished tasks (optionally only some), fleet-wide."""
    async with db.tx(Tenant.admin()) as conn:
        rows = await conn.fetch(SQL, agent_type, model, task_type)
    return [Reputation(r["agent_type"], r["model"], r["task_type"], r["first"], r["retried"],
                       r["rejected"], r["abandoned"]) for r in rows]  # fmt: skip


async def reputation_of(db: Database, key: str) -> Reputation:
    agent, model, task_type = parse_key(key)
    found = await reputations(db, agent_type=agent.value, model=model, task_type=task_type.value)
    return found[0] if found else Reputation(agent.value, model, task_type.value)


class RouteScores:
    """Per task type, model → (score, n) for the router's reputation step, read at most
    every `ttl_s` seconds (a spawn does not pay the aggregate each time)."""

    def __init__(self, db: Database, ttl_s: float = 30.0) -> None:
        from fleet_core.ttl_cache import TtlCache

        self.db = db
        self._cache: TtlCache[str, dict[str, tuple[float, int]]] = TtlCache(
            ttl_s=ttl_s, max_entries=16
        )

    async def for_task_type(self, task_type: TaskType) -> dict[str, tuple[float, int]]:
        hit = self._cache.get(task_type.value)
        if hit is not None:
            return hit
        found = await reputations(self.db, task_type=task_type.value)
        scores: dict[str, tuple[float, int]] = {}
        for r in found:  # a model run by several agent types: the one with more tasks
            if r.n > scores.get(r.model, (0.0, -1))[1]:
                scores[r.model] = (r.score, r.n)
        self._cache.put(task_type.value, scores)
        return scores
