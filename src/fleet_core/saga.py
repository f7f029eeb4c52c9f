"""A small compensating saga: steps run in order; when one fails, the compensations of the
steps that completed run in reverse, each isolated from the others, and the error says which
step failed and what every compensation did."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from fleet_core.errors import EXIT_OTHER, FleetError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class CompensationOutcome:
    step: str
    ok: bool
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "ok": self.ok, "error": self.error}


@dataclass(frozen=True)
class Failure:
    """What a compensation is told: the step that failed, its error, and the compensations
    that already ran (those of later steps)."""

    step: str
    error: BaseException
    compensated: tuple[CompensationOutcome, ...]

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "step": self.step,
            "error": str(self.error),
            "compensations": [c.to_dict() for c in self.compensated],
        }
        if isinstance(self.error, FleetError):
            doc["cause"] = self.error.to_dict()
        return doc


Compensation = Callable[[Failure], Awaitable[None]]


class SagaError(FleetError):
    """Step `step` failed with `cause`; `compensations` lists what was undone, newest first."""

    code = "spawn_failed"

    def __init__(
        self, step: str, cause: BaseException, compensations: list[CompensationOutcome]
    ) -> None:
        super().__init__(f"{step}: {cause}")
        self.step = step
        self.cause = cause
        self.compensations = compensations
        self.exit_code = cause.exit_code if isinstance(cause, FleetError) else EXIT_OTHER
        self.task_id: str | None = None

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "error": self.code,
            "step": self.step,
            "message": str(self.cause),
            "compensations": [c.to_dict() for c in self.compensations],
        }
        if isinstance(self.cause, FleetError):
            doc["cause"] = self.cause.to_dict()
        if self.task_id:
            doc["task_id"] = self.task_id
        return doc


class Saga:
    def __init__(self, name: str) -> None:
        self.name = name
        self._done: list[tuple[str, Compensation | None]] = []

    async def step(
        self,
        name: str,
        forward: Callable[[], Awaitable[T]],
        compensate: Callable[[T, Failure], Awaitable[None]] | None = None,
    ) -> T:
        try:
            result = await forward()
        except Exception as exc:
            outcomes = await self._compensate(name, exc)
            raise SagaError(name, exc, outcomes) from exc
        except BaseException as exc:
            # Cancellation, a timeout's cancel, KeyboardInterrupt, SystemExit: undo what was
            # done, then let the signal go on unchanged (wrapping it would lose it).
            await self._compensate(name, exc)
            raise
        undo: Compensation | None = None
        if compensate is not None:

            async def undo(failure: Failure, _r: T = result) -> None:
                await compensate(_r, failure)

        self._done.append((name, undo))
        return result

    async def _compensate(self, step: str, error: BaseException) -> list[CompensationOutcome]:
        outcomes: list[CompensationOutcome] = []
        for name, undo in reversed(self._done):
            if undo is None:
                continue
            try:
                await undo(Failure(step, error, tuple(outcomes)))
                outcomes.append(CompensationOutcome(name, True))
            except Exception as exc:  # keep going: the others must still run
                log.exception("compensation failed", extra={"saga": self.name, "step": name})
                outcomes.append(CompensationOutcome(name, False, f"{type(exc).__name__}: {exc}"))
        return outcomes
