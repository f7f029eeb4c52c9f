"""An agent's output and terminal: `logs` (its kept log file, after the session too) and
`attach` (to a live agent; an ended one is refused with the task's state and its log's end)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fleet_core.errors import BadInputError, NoSessionError
from fleet_core.models import TaskRecord
from fleet_core.task_access import TaskAccess
from fleet_core.wording import now

if TYPE_CHECKING:
    from fleet_core.conductor import Actor

ATTACH_TAIL_LINES = 15  # of the log, when attach is refused because the agent ended


class SessionVerbs(TaskAccess):
    async def logs(self, actor: Actor, ref: str, lines: int = 100) -> str:
        if not 1 <= lines <= 1000:
            raise BadInputError("lines", "must be between 1 and 1000")
        rec = await self._with_session(actor, ref)
        try:
            return await self.runtime.logs(rec.id, lines)  # its kept file, after the session too
        except Exception as exc:
            raise NoSessionError(f"task {rec.short_id} has no agent session: {exc}") from None

    async def attach_command(self, actor: Actor, ref: str) -> list[str]:
        """tmux attach to a live agent; an ended one (dead pane, session gone) is refused
        with the task's state and the end of its log."""
        rec = await self._with_session(actor, ref)
        present = await self.runtime.has_agent(rec.id)
        if not present or not await self.runtime.is_alive(rec.id):  # the exit record counts
            raise NoSessionError(await self._nothing_to_attach(rec, gone=not present))
        return self.runtime.attach_command(rec.id)

    async def _nothing_to_attach(self, rec: TaskRecord, *, gone: bool) -> str:
        if not gone:  # its last words may still be on their way to the log file
            await self.runtime.output_settled(rec.id)
        ended = await self.runtime.exit_status(rec.id)
        how = f" (exit {ended.code}{', ' + ended.signal if ended.signal else ''})" if ended else ""
        why = "its agent's session is gone" if gone else f"its agent has ended{how}"
        text = f"task {rec.short_id}: nothing to attach to, {why}; the task {now(rec.status.value)}"
        try:
            tail = await self.runtime.logs(rec.id, ATTACH_TAIL_LINES)
        except Exception:
            tail = ""
        if tail:
            text += f"\nthe end of its log (all of it: fleet logs {rec.short_id}):\n{tail}"
        return text

    async def _with_session(self, actor: Actor, ref: str) -> TaskRecord:
        rec = await self.registry(actor).resolve(ref)
        if not rec.tmux_session:
            raise NoSessionError(f"task {rec.short_id} ({rec.status.value}) never started")
        self._require_local(rec)
        return rec
