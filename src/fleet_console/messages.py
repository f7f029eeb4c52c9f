"""Messages from the engine side to the console's widgets (posted by the bridge)."""

from __future__ import annotations

from uuid import UUID

from textual.message import Message


class EngineReady(Message):
    """The engine runs: screens may load their data."""


class EngineFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class TasksChanged(Message):
    """These tasks changed (coalesced over a short interval); None means reload everything."""

    def __init__(self, task_ids: set[UUID] | None) -> None:
        super().__init__()
        self.task_ids = task_ids
