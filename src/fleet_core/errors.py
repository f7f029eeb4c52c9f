"""Typed errors of the engine. Each carries the CLI exit code of DESIGN §8."""

from __future__ import annotations

from typing import Any

from fleet_core.wording import now, refusal

EXIT_OTHER = 1
EXIT_BAD_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_DENIED = 4
EXIT_CONFLICT = 5


class FleetError(Exception):
    """Base of every error the engine raises on purpose."""

    exit_code = EXIT_OTHER
    code = "fleet_error"

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": str(self)}


class BadInputError(FleetError):
    """Input rejected before anything was changed; names the offending field."""

    exit_code = EXIT_BAD_INPUT
    code = "bad_input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "field": self.field, "message": self.message}


class UsageError(FleetError):
    """The command line itself is wrong: an unknown verb or flag, a missing argument, a value
    outside its choices. One line, exit 2 (not argparse's usage block)."""

    exit_code = EXIT_BAD_INPUT
    code = "usage"


class ConfigError(FleetError):
    exit_code = EXIT_BAD_INPUT
    code = "config_error"


class DatabaseError(FleetError):
    code = "database_error"


class PostgresNotFoundError(DatabaseError):
    code = "postgres_not_found"


class UnsafeRoleError(DatabaseError):
    """The engine's database role could bypass row-level security."""

    code = "unsafe_role"


class MigrationError(DatabaseError):
    code = "migration_error"


class TaskNotFoundError(FleetError):
    exit_code = EXIT_NOT_FOUND
    code = "not_found"

    def __init__(self, task_id: str) -> None:
        super().__init__(f"task {task_id} not found")
        self.task_id = task_id


class NotFoundError(FleetError):
    """Something other than a task that the caller named does not exist (a token id)."""

    exit_code = EXIT_NOT_FOUND
    code = "not_found"


class RepositoryUnavailableError(BadInputError):
    """The named repository cannot be used: not an absolute path, not a directory, not a git
    work tree. The CLI says which (exit 2); the API answers every case alike (404), so that
    its answers reveal nothing about the server's file system."""

    code = "repository_not_found"

    def __init__(self, named: str, message: str) -> None:
        super().__init__("repository", message)
        self.named = named

    def public_dict(self) -> dict[str, Any]:
        """The one answer the API gives, whatever the reason."""
        return {
            "error": self.code,
            "field": self.field,
            "message": f"no repository {self.named[:200]!r} is available to you",
        }


class AmbiguousTaskIdError(FleetError):
    exit_code = EXIT_BAD_INPUT
    code = "ambiguous_id"

    def __init__(self, prefix: str, matches: list[str]) -> None:
        shown = ", ".join(m[:12] for m in matches[:5])
        super().__init__(f"task id prefix {prefix!r} matches {len(matches)} tasks: {shown}")
        self.prefix = prefix
        self.matches = matches


class InvalidTransitionError(FleetError):
    exit_code = EXIT_CONFLICT
    code = "invalid_transition"

    def __init__(
        self, task_id: str, from_status: str, to_status: str, *, attempts: int | None = None
    ) -> None:
        """`attempts`: how many times the task ran, when the message should say so."""
        super().__init__(refusal(task_id[:8], from_status, to_status, attempts=attempts))
        self.task_id = task_id
        self.from_status = from_status
        self.to_status = to_status


class StaleVersionError(FleetError):
    exit_code = EXIT_CONFLICT
    code = "stale_version"

    def __init__(self, task_id: str, expected: int, actual: int | None) -> None:
        now_at = "changed again" if actual is None else f"now {actual}"
        super().__init__(
            f"task {task_id[:8]} was changed by someone else meanwhile (version {expected}, "
            f"{now_at}): look at it again and retry"
        )
        self.task_id = task_id
        self.expected = expected
        self.actual = actual


class ActiveTaskDeletionError(FleetError):
    exit_code = EXIT_CONFLICT
    code = "conflict"

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(
            f"task {task_id[:8]} {now(status)}; only a merged, abandoned or cancelled task can "
            "be deleted (stop it first)"
        )
        self.task_id = task_id
        self.status = status


class DuplicateTaskError(FleetError):
    """A task with the same client idempotency key exists for this operator."""

    exit_code = EXIT_CONFLICT
    code = "duplicate"

    def __init__(self, existing_id: str) -> None:
        super().__init__(f"a task with this idempotency key already exists: {existing_id}")
        self.existing_id = existing_id


class DeniedError(FleetError):
    exit_code = EXIT_DENIED
    code = "denied"


class SpawnError(FleetError):
    """Starting an agent failed at one step; `step` is worktree, setup or process."""

    code = "spawn_failed"

    def __init__(self, step: str, message: str, *, output: str = "") -> None:
        super().__init__(f"{step}: {message}")
        self.step = step
        self.output = output

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "step": self.step, "message": str(self)}


class SpawnDeniedError(DeniedError):
    """The governor refused a spawn: who, at which tier, how many run, the limit, and a hint."""

    code = "spawn_denied"

    def __init__(
        self,
        *,
        operator_id: str,
        tier: str,
        active: int,
        limit: int,
        reason: str,
        hint: str,
        queued_ahead: int = 0,
    ) -> None:
        super().__init__(
            f"spawn denied for {operator_id} (tier {tier}): "
            f"{active} of {limit} slots in use; {hint}"
        )
        self.operator_id = operator_id
        self.tier = tier
        self.active = active
        self.limit = limit
        self.reason = reason
        self.hint = hint
        self.queued_ahead = queued_ahead

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.code,
            "message": str(self),
            "operator": self.operator_id,
            "tier": self.tier,
            "active": self.active,
            "limit": self.limit,
            "reason": self.reason,
            "hint": self.hint,
            "queued_ahead": self.queued_ahead,
        }


class OtherHostError(FleetError):
    """The task's agent runs under another engine's runtime (DESIGN §10)."""

    exit_code = EXIT_CONFLICT
    code = "other_host"

    def __init__(self, task_id: str, host_id: str) -> None:
        super().__init__(f"task {task_id} runs on host {host_id}; act on it from there")
        self.task_id = task_id
        self.host_id = host_id


class NoSessionError(FleetError):
    """The task has no agent session (never started, or cleaned up)."""

    exit_code = EXIT_NOT_FOUND
    code = "no_session"


class RetryBudgetSpentError(FleetError):
    """No retries left: the task was abandoned instead."""

    exit_code = EXIT_CONFLICT
    code = "retry_budget_spent"


class MergeRefusedError(FleetError):
    """The forge or the task's state does not allow a merge; says why."""

    exit_code = EXIT_CONFLICT
    code = "merge_refused"


class AuthError(FleetError):
    """A bearer token was refused; the message says why in a few words, never echoing it."""

    exit_code = EXIT_DENIED
    code = "unauthorized"


class RepositoryNotFoundError(FleetError):
    """No repository of that name or path is granted to the caller. A caller who may not
    use a repository gets this one answer whatever the path is (missing, not a repository,
    someone else's): the message echoes what they sent and says nothing about the disk."""

    exit_code = EXIT_NOT_FOUND
    code = "repository_not_found"
    field = "repository"

    def __init__(self, ref: str, message: str | None = None) -> None:
        super().__init__(message or f"no repository named {ref!r} is granted to you")
        self.ref = ref

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "field": self.field, "message": str(self)}


class RepositoryConflictError(FleetError):
    """A repository's name or path is taken, or it still has tasks that are not finished."""

    exit_code = EXIT_CONFLICT
    code = "repository_conflict"


class ConflictError(FleetError):
    """The request meets state it must not change without the operator's word (exit 5)."""

    code = "conflict"
    exit_code = EXIT_CONFLICT
