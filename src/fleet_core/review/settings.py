"""Which reviewers review a task, and the rules their verdicts follow.

From the settings (`fleet.toml`, FLEET_* variables):

    min_approvals = 2              # unset: every reviewer that answered approve/request_changes
    review_timeout_minutes = 30    # the whole review; then ready with a warning
    strict_reviews = false         # true: a review that times out is a failure, retried
    review_concurrency = 3         # reviewers running at once, fleet-wide

    [reviews]
    focuses = ["security", "logic", "architecture"]
    kind = "auto"   # or demo, anthropic, openai, gemini, claude_code, codex, gemini_cli
    model = "..."                  # the provider's or CLI's model (a default per kind)
    cli_timeout_minutes = 10       # one CLI reviewer
    urls = {anthropic = "https://..."}   # the providers' base URLs
    task_types = {docs = {focuses = ["logic"]}}
    repositories = {"/path/to/repo" = {focuses = ["security"], kind = "openai"}}

`auto`: the demo reviewer for demo agents; else an HTTP provider whose API key is set
(ANTHROPIC_API_KEY, OPENAI_API_KEY, GEMINI_API_KEY, in that order of preference); else the
task's own agent CLI in its JSON mode when it is installed; else none (the review is skipped).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fleet_core.errors import BadInputError
from fleet_core.models import AgentType, TaskRecord

if TYPE_CHECKING:
    from fleet_core.config import Settings

DEFAULT_FOCUSES = ("security", "logic", "architecture")
HTTP_KINDS = ("anthropic", "openai", "gemini")
CLI_KINDS = ("claude_code", "codex", "gemini_cli")
KINDS = ("auto", "demo", *HTTP_KINDS, *CLI_KINDS)
CLI_OF_AGENT = {AgentType.CLAUDE_CODE: "claude_code", AgentType.CODEX: "codex",
                AgentType.GEMINI: "gemini_cli"}  # fmt: skip
CLI_BINARY = {"claude_code": "claude", "codex": "codex", "gemini_cli": "gemini"}
KEYS = ("focuses", "kind", "model", "cli_timeout_minutes", "urls", "task_types", "repositories")
LOCAL_KEYS = ("focuses", "kind", "model")


@dataclass(frozen=True)
class ReviewerSpec:
    focus: str
    kind: str  # a concrete kind (never auto)
    model: str | None = None


@dataclass(frozen=True)
class ReviewSettings:
    focuses: tuple[str, ...] = DEFAULT_FOCUSES
    kind: str = "auto"
    model: str | None = None
    min_approvals: int | None = None
    timeout_s: float = 30 * 60.0
    strict: bool = False
    concurrency: int = 3
    cli_timeout_s: float = 600.0
    urls: Mapping[str, str] = field(default_factory=dict)
    task_types: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    repositories: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def parse(
        cls,
        reviews: Mapping[str, Any],
        *,
        min_approvals: int | None = None,
        timeout_minutes: float = 30.0,
        strict: bool = False,
        concurrency: int = 3,
        secrets: Mapping[str, str] | None = None,
        minute_s: float = 60.0,
    ) -> ReviewSettings:
        """Checked: an unknown key, kind or a bad value is a BadInputError naming the field."""
        unknown = sorted(set(reviews) - set(KEYS))
        if unknown:
            raise BadInputError(f"reviews.{unknown[0]}", f"unknown key (known: {', '.join(KEYS)})")
        _local(reviews, "reviews")
        urls = reviews.get("urls", {})
        if not isinstance(urls, Mapping) or any(
            k not in HTTP_KINDS
            or not isinstance(v, str)
            or not v.startswith(("http://", "https://"))
            for k, v in urls.items()
        ):
            raise BadInputError("reviews.urls", f"a table of {', '.join(HTTP_KINDS)} → http(s) URL")
        cli_minutes = reviews.get("cli_timeout_minutes", 10)
        if not isinstance(cli_minutes, int | float) or not 0 < cli_minutes <= 240:
            raise BadInputError("reviews.cli_timeout_minutes", "a number of minutes in (0, 240]")
        tables: dict[str, dict[str, Mapping[str, Any]]] = {}
        for name in ("task_types", "repositories"):
            table = reviews.get(name, {})
            if not isinstance(table, Mapping):
                raise BadInputError(f"reviews.{name}", "must be a table")
            for key, sub in table.items():
                if name == "task_types" and key not in {t.value for t in _task_types()}:
                    raise BadInputError(f"reviews.task_types.{key}", "unknown task type")
                if not isinstance(sub, Mapping):
                    raise BadInputError(f"reviews.{name}.{key}", "must be a table")
                extra = sorted(set(sub) - set(LOCAL_KEYS))
                if extra:
                    raise BadInputError(f"reviews.{name}.{key}.{extra[0]}", "unknown key")
                _local(sub, f"reviews.{name}.{key}")
            tables[name] = dict(table)
        if min_approvals is not None and not 0 <= min_approvals <= 10:
            raise BadInputError("min_approvals", "must be between 0 and 10")
        if not 0 < timeout_minutes <= 1440:
            raise BadInputError("review_timeout_minutes", "must be in (0, 1440]")
        if not 1 <= concurrency <= 100:
            raise BadInputError("review_concurrency", "must be between 1 and 100")
        return cls(
            focuses=tuple(reviews.get("focuses", DEFAULT_FOCUSES)),
            kind=str(reviews.get("kind", "auto")),
            model=reviews.get("model"),
            min_approvals=min_approvals,
            timeout_s=timeout_minutes * minute_s,
            strict=strict,
            concurrency=concurrency,
            cli_timeout_s=float(cli_minutes) * minute_s,
            urls=dict(urls),
            task_types=tables["task_types"],
            repositories=tables["repositories"],
            secrets=dict(secrets or {}),
        )

    def secret(self, name: str) -> str | None:
        return self.secrets.get(name) or os.environ.get(name) or None

    def reviewers_for(self, rec: TaskRecord) -> list[ReviewerSpec]:
        """The reviewers of one task: the repository's table wins over the task type's, which
        wins over the defaults; none when no kind can serve it (the review is skipped)."""
        local: dict[str, Any] = {}
        local.update(self.task_types.get(rec.task_type.value, {}))
        local.update(self.repositories.get(rec.repository, {}))
        focuses = tuple(local.get("focuses", self.focuses))
        kind = str(local.get("kind", self.kind))
        model = local.get("model", self.model)
        if kind == "auto":
            kind, model = self._auto(rec), None
        if kind == "" or not focuses:
            return []
        return [ReviewerSpec(focus, kind, model) for focus in focuses]

    def _auto(self, rec: TaskRecord) -> str:
        if rec.agent_type is AgentType.DEMO:
            return "demo"
        from fleet_core.review.http import KEY_NAMES

        for kind in HTTP_KINDS:
            if self.secret(KEY_NAMES[kind]):
                return kind
        cli = CLI_OF_AGENT.get(rec.agent_type)
        if cli is not None and shutil.which(CLI_BINARY[cli]):
            return cli
        return ""


def review_settings(settings: Settings, *, minute_s: float = 60.0) -> ReviewSettings:
    return ReviewSettings.parse(
        settings.reviews,
        min_approvals=settings.min_approvals,
        timeout_minutes=settings.review_timeout_minutes,
        strict=settings.strict_reviews,
        concurrency=settings.review_concurrency,
        secrets=settings.secrets,
        minute_s=minute_s,
    )


def _local(table: Mapping[str, Any], where: str) -> None:
    focuses = table.get("focuses")
    if focuses is not None and (
        not isinstance(focuses, list | tuple)
        or not 1 <= len(focuses) <= 5
        or any(not isinstance(f, str) or not f.strip() or len(f) > 100 for f in focuses)
    ):
        raise BadInputError(f"{where}.focuses", "1 to 5 non-blank names")
    if focuses is not None and len(set(focuses)) != len(focuses):
        raise BadInputError(f"{where}.focuses", "each focus once")
    kind = table.get("kind")
    if kind is not None and kind not in KINDS:
        raise BadInputError(f"{where}.kind", f"unknown kind {kind!r} ({', '.join(KINDS)})")
    model = table.get("model")
    if model is not None and (not isinstance(model, str) or not 0 < len(model) <= 100):
        raise BadInputError(f"{where}.model", "a model name (1-100 characters)")


def _task_types() -> list[Any]:
    from fleet_core.models import TaskType

    return list(TaskType)
