"""Typed errors of the engine. Each carries the CLI exit code of DESIGN §8."""

from __future__ import annotations

from typing import Any

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

    def __init__(self, task_id: str, from_status: str, to_status: str) -> None:
        super().__init__(f"task {task_id}: cannot move from {from_status} to {to_status}")
        self.task_id = task_id
        self.from_status = from_status
        self.to_status = to_status


class StaleVersionError(FleetError):
    exit_code = EXIT_CONFLICT
    code = "stale_version"

    def __init__(self, task_id: str, expected: int, actual: int | None) -> None:
        super().__init__(
            f"task {task_id} changed underneath: expected version {expected}, found {actual}"
        )
        self.task_id = task_id
        self.expected = expected
        self.actual = actual


class ActiveTaskDeletionError(FleetError):
    exit_code = EXIT_CONFLICT
    code = "conflict"

    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(
            f"task {task_id} is {status}; only merged, abandoned or cancelled tasks can be deleted"
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
