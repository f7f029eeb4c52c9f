"""Pydantic models shared by the engine, the CLI, the console and the API."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal
from uuid import UUID, uuid4

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    field_validator,
)

from fleet_core.errors import BadInputError
from fleet_core.lifecycle import TaskStatus
from fleet_core.runtime.validation import MODEL_RE, validate_model

__all__ = [
    "AgentType",
    "CiStatus",
    "FleetStatusSummary",
    "NewTask",
    "SpawnRequest",
    "TaskRecord",
    "TaskStatus",
    "TaskSummary",
    "TaskType",
    "TaskUpdate",
    "Tier",
]


RuntimeMode = Literal["local", "container"]


class AgentType(StrEnum):
    CLAUDE_CODE = "claude_code"
    CODEX = "codex"
    GEMINI = "gemini"
    AIDER = "aider"
    DEMO = "demo"
    CUSTOM = "custom"


# The agent types fleet ships an image for (runtime/images/<type>.Dockerfile): all but custom.
IMAGE_AGENTS = [a.value for a in AgentType if a is not AgentType.CUSTOM]


class TaskType(StrEnum):
    BUG_FIX = "bug_fix"
    FEATURE = "feature"
    REFACTOR = "refactor"
    REVIEW = "review"
    DOCS = "docs"


class CiStatus(StrEnum):
    PENDING = "pending"
    PASSING = "passing"
    FAILING = "failing"


class Tier(StrEnum):
    """Conviction tiers, lowest first; compare with `rank`."""

    OBSERVER = "observer"
    PARTICIPANT = "participant"
    BUILDER = "builder"
    ARCHITECT = "architect"
    SOVEREIGN = "sovereign"

    @property
    def rank(self) -> int:
        return list(Tier).index(self)

    def at_least(self, other: Tier) -> bool:
        return self.rank >= other.rank


OPERATOR_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,127}$")
OperatorId = Annotated[str, StringConstraints(pattern=OPERATOR_ID_RE.pattern)]
NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


# A string with something in it besides white space (the request strips it).
NOT_BLANK = r"\S"
OverrideKey = Annotated[str, StringConstraints(min_length=1, max_length=100, pattern=NOT_BLANK)]
OverrideValue = Annotated[str, StringConstraints(max_length=20_000)]
# pydantic would put the keys' pattern in `patternProperties`, which does not constrain names.
OVERRIDES_SCHEMA = {
    "type": "object",
    "title": "Context Overrides",
    "maxProperties": 20,
    "propertyNames": {"minLength": 1, "maxLength": 100, "pattern": NOT_BLANK},
    "additionalProperties": {"type": "string", "maxLength": 20_000},
}


def _check_model(value: str) -> str:
    try:
        return validate_model(value)
    except BadInputError as exc:
        raise ValueError(exc.message) from None


class SpawnRequest(BaseModel):
    """What a caller asks for; limits from the sprint plan. Every limit the server checks on
    the body is declared here (so in the OpenAPI document)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    description: str = Field(min_length=1, max_length=5000, pattern=NOT_BLANK)
    repository: str = Field(
        min_length=1,
        max_length=500,
        pattern=NOT_BLANK,
        description="The repository to work in: an absolute path to a git work tree that the "
        "server can use. Any other string is answered 404 `repository_not_found`, the same "
        "answer whatever the reason.",
    )
    task_type: TaskType
    agent_type: AgentType | None = None
    model: str | None = Field(
        default=None, min_length=1, max_length=100, json_schema_extra={"pattern": MODEL_RE.pattern}
    )
    base_branch: str | None = Field(default=None, min_length=1, max_length=200)
    max_retries: int = Field(default=3, ge=0, le=10)
    timeout_minutes: int = Field(default=120, ge=5, le=480)
    context_overrides: Annotated[
        dict[OverrideKey, OverrideValue], WithJsonSchema(OVERRIDES_SCHEMA)
    ] = Field(default_factory=dict, max_length=20)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    runtime: RuntimeMode | None = Field(
        default=None,
        description="Where the agent runs: `local` (tmux, sandboxed) or `container` (a hardened "
        "container). Unset: the agent type's, the repository's or the global setting.",
    )

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        return None if value is None else _check_model(value)


class NewTask(BaseModel):
    """A fully decided task, ready to be inserted by the registry."""

    model_config = ConfigDict(extra="forbid")

    id: UUID = Field(default_factory=uuid4)
    agent_type: AgentType
    model: str = Field(min_length=1, max_length=100)
    task_type: TaskType
    description: str = Field(min_length=1, max_length=5000)
    branch: str = Field(min_length=1, max_length=128)
    repository: str = Field(min_length=1, max_length=500)
    base_branch: str | None = Field(default=None, max_length=200)
    max_retries: int = Field(default=3, ge=0, le=10)
    timeout_minutes: int = Field(default=120, ge=5, le=480)
    context_overrides: dict[str, str] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, max_length=200)
    context_hash: str | None = None
    prompt_hash: str | None = None
    host_id: str | None = None
    demo: bool = False  # made by `fleet demo`, which removes only these
    runtime: RuntimeMode = "local"

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        return _check_model(value)


class TaskRecord(BaseModel):
    """One row of fleet_tasks."""

    model_config = ConfigDict(frozen=True)

    id: UUID
    operator_id: str
    agent_type: AgentType
    model: str
    task_type: TaskType
    description: str
    branch: str
    repository: str
    base_branch: str | None
    worktree_path: str | None
    container_id: str | None
    tmux_session: str | None
    host_id: str | None
    status: TaskStatus
    version: int
    pr_number: int | None
    ci_status: CiStatus | None
    review_status: dict[str, Any] | None
    retry_count: int
    max_retries: int
    timeout_minutes: int
    context_hash: str | None
    prompt_hash: str | None
    idempotency_key: str | None
    context_overrides: dict[str, str]
    failure_context: dict[str, Any] | None
    agent_identity_id: UUID | None
    group_id: UUID | None
    last_activity_at: datetime | None
    spawned_at: datetime | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
    sandbox: str | None = None  # "bwrap", or "none" when the agent ran unsandboxed
    # The last stall warning: {"since", "minutes", "at"} (no commit since the agent's start or
    # its last commit, whichever is later).
    stall_warning: dict[str, Any] | None = None
    demo: bool = False  # made by `fleet demo`
    runtime: RuntimeMode = "local"  # where its agent runs (kept by retries)

    @property
    def short_id(self) -> str:
        return str(self.id)[:8]

    def summary(self, now: datetime | None = None) -> TaskSummary:
        return TaskSummary.from_record(self, now)


class TaskDetail(TaskRecord):
    """One task as the API's detail shows it: `why` (one line: the cause, the retries, where
    it is now) first, and `forge_error` when its forge has not answered for several cycles."""

    why: str
    forge_error: str | None = None
    dod: dict[str, Any] | None = None  # the Definition of Done as checked (review_status)
    report: dict[str, Any] | None = None  # a review-type task's report: its verdict JSON


class TaskSummary(BaseModel):
    id: UUID
    status: TaskStatus
    description: str
    agent_type: AgentType
    model: str
    task_type: TaskType
    branch: str
    pr_number: int | None
    ci_status: CiStatus | None
    retry_count: int
    spawned_at: datetime | None
    created_at: datetime
    duration_minutes: float | None

    @classmethod
    def from_record(cls, rec: TaskRecord, now: datetime | None = None) -> TaskSummary:
        duration = None
        if rec.spawned_at is not None:
            end = rec.completed_at or now or datetime.now(UTC)
            duration = round((end - rec.spawned_at).total_seconds() / 60, 1)
        return cls(
            id=rec.id,
            status=rec.status,
            description=rec.description,
            agent_type=rec.agent_type,
            model=rec.model,
            task_type=rec.task_type,
            branch=rec.branch,
            pr_number=rec.pr_number,
            ci_status=rec.ci_status,
            retry_count=rec.retry_count,
            spawned_at=rec.spawned_at,
            created_at=rec.created_at,
            duration_minutes=duration,
        )


class FleetStatusSummary(BaseModel):
    """Counts over every visible task, plus the newest tasks themselves."""

    active: int
    completed: int
    failed: int
    queued: int
    tasks: list[TaskRecord]


class TaskUpdate(BaseModel):
    """Fields that may change with a transition or a versioned metadata update."""

    model_config = ConfigDict(extra="forbid")

    worktree_path: str | None = None
    container_id: str | None = None
    tmux_session: str | None = None
    host_id: str | None = None
    branch: str | None = Field(default=None, min_length=1, max_length=128)  # a retry's fresh one
    pr_number: int | None = Field(default=None, gt=0)
    ci_status: CiStatus | None = None
    review_status: dict[str, Any] | None = None
    failure_context: dict[str, Any] | None = None
    prompt_hash: str | None = None
    context_hash: str | None = None
    agent_identity_id: UUID | None = None
    group_id: UUID | None = None
    last_activity_at: datetime | None = None
    spawned_at: datetime | None = None
    completed_at: datetime | None = None
    sandbox: str | None = Field(default=None, pattern=r"^(bwrap|none|container)$")
    stall_warning: dict[str, Any] | None = None

    def assignments(self, first_param: int) -> tuple[list[str], list[Any]]:
        """SET clauses for the fields given explicitly (None clears), numbered from first_param."""
        sets: list[str] = []
        args: list[Any] = []
        for name in sorted(self.model_fields_set):
            value = getattr(self, name)
            if isinstance(value, CiStatus):
                value = value.value
            args.append(value)
            sets.append(f"{name} = ${first_param + len(args) - 1}")
        return sets, args
