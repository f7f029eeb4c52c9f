"""The console: a Textual app that runs the engine (database, conductor, monitor) in a worker
and shows the fleet live. It talks to the engine only through fleet_core's public API
(`EngineSource`, the conductor's verbs) and its events (`Bridge`). Quitting stops the engine
cleanly and leaves every agent running in tmux."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from textual import on, work
from textual.app import App
from textual.binding import Binding

from fleet_console.bridge import Bridge
from fleet_console.commands import FleetCommands
from fleet_console.messages import EngineFailed, EngineReady
from fleet_console.screens.fleet import FleetScreen
from fleet_console.screens.forms import ConfirmDialog, HelpScreen, SpawnForm, SpawnFormResult
from fleet_console.screens.task import TaskScreen
from fleet_console.source import EngineSource
from fleet_console.widgets.task_table import LOOK, MEANING
from fleet_core.conductor import Actor
from fleet_core.config import Settings
from fleet_core.engine import Engine
from fleet_core.engine_role import served_engine
from fleet_core.errors import (
    BadInputError,
    DeniedError,
    FleetError,
    RepositoryNotFoundError,
    SpawnDeniedError,
)
from fleet_core.events import EventBus
from fleet_core.local_spawn import spawn_local

EngineFactory = Callable[[EventBus], AbstractAsyncContextManager[Engine]]
KEYS = [
    ("n", "spawn an agent on a new task (form; ctrl+s spawns)"),
    ("s", "stop the selected task: kill its agent, cancel it"),
    ("r", "retry a failed task now"),
    ("m", "merge a ready task's pull request"),
    ("d", "delete a finished task (its work is snapshotted first)"),
    ("a / enter", "attach to a live agent's tmux session (detach: C-b d)"),
    ("l / enter", "the task: live log, details, CI, reviews, audit"),
    ("1 2 3 4", "only tasks ready to merge, failed for good, stalled, queued"),
    ("b", "show or hide the branch column"),
    ("/", "filter the tasks; escape clears"),
    ("click a header", "sort by that column (again: reverse)"),
    ("ctrl+p", "the command palette: every verb"),
    ("?", "this help"),
    ("q", "quit (agents keep running)"),
]


def legend() -> list[tuple[str, str, str, str]]:
    """(symbol, status, style, meaning) of every status, for the help screen."""
    return [(sym, status.value, style, MEANING[status]) for status, (sym, style) in LOOK.items()]


class FleetApp(App[None]):
    CSS_PATH = ["styles/app.tcss", "styles/forms.tcss", "styles/task.tcss"]
    TITLE = "fleet"
    COMMANDS = App.COMMANDS | {FleetCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit", tooltip="quit; agents keep running"),
        Binding("question_mark", "help", "Help", id="help"),
    ]

    def __init__(
        self,
        settings: Settings,
        *,
        engine: EngineFactory | None = None,
        clock: Callable[[], datetime] | None = None,
        after_start: Callable[[Engine], object] | None = None,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.actor = Actor(settings.operator, settings.tier)
        self.clock = clock or (lambda: datetime.now(UTC))
        self.engine_factory = engine or self._served
        self.after_start = after_start
        self.source: EngineSource | None = None
        self.bridge: Bridge | None = None
        self.engine_error: str | None = None

    def heading(self) -> str:
        where = "FLEET_DATABASE_URL" if self.settings.database_url else "embedded database"
        return f"fleet · {self.actor.operator_id} ({self.actor.tier.value}) · {where}"

    # -- the engine ----------------------------------------------------------------------------

    def on_mount(self) -> None:
        self.fleet_screen = FleetScreen()
        self.push_screen(self.fleet_screen)
        self.run_worker(self._engine_main(), group="engine", exit_on_error=False)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.exit)  # restore the terminal, stop cleanly

    async def _engine_main(self) -> None:
        bus = EventBus()
        try:
            async with self.engine_factory(bus) as engine:
                self.source = EngineSource(engine, self.actor)
                self.bridge = Bridge(self, bus, self.fleet_screen)
                self.fleet_screen.post_message(EngineReady())
                if engine.serving.startswith("client"):
                    self.notify(f"this console is its {engine.serving}; it becomes the engine "
                                "when that one exits", title="another process is the engine",
                                timeout=10)  # fmt: skip
                if self.after_start is not None:
                    result = self.after_start(engine)
                    if asyncio.iscoroutine(result):
                        await result
                await asyncio.Event().wait()  # until the app exits and cancels this worker
        except Exception as exc:  # the console stays up and says why
            self.engine_error = f"{type(exc).__name__}: {exc}"
            self.post_message(EngineFailed(self.engine_error))
        finally:
            if self.bridge is not None:
                self.bridge.close()
            self.source = None

    def _served(self, bus: EventBus) -> AbstractAsyncContextManager[Engine]:
        """The engine, or its client when another process is the engine (DESIGN §10)."""
        return served_engine(
            self.settings, "console", tenant=self.actor.tenant, bus=bus, on_role=self._took_role
        )

    def _took_role(self, engine: Engine) -> None:
        self.notify("the engine process exited: this console is the engine now",
                    title="engine")  # fmt: skip

    @on(EngineFailed)
    def engine_failed(self, message: EngineFailed) -> None:
        self.notify(message.error, title="engine stopped", severity="error", timeout=30)

    # -- verbs ---------------------------------------------------------------------------------

    def open_spawn_form(self) -> None:
        if self.source is not None:
            self.push_screen(SpawnForm(str(Path.cwd())))

    @on(SpawnForm.Submitted)
    def spawn_submitted(self, message: SpawnForm.Submitted) -> None:
        self._spawn(message.form, message.result)

    @work(group="verbs", exit_on_error=False)
    async def _spawn(self, form: SpawnForm, result: SpawnFormResult) -> None:
        """The form waits for one answer: `show_error` (it stays open) or `dismiss`."""
        if self.source is None:
            form.show_error("engine", "the engine is not running")
            return
        conductor = self.source.conductor
        try:
            # As `fleet spawn`: a repository of this OS user's is registered on first use.
            out, registered = await spawn_local(
                conductor, self.actor, result.request, queue=result.queue
            )
        except BadInputError as exc:
            form.show_error(exc.field, exc.message)
            return
        except SpawnDeniedError as exc:
            form.show_error("limit", f"{exc.active}/{exc.limit} slots in use: {exc.hint}")
            return
        except (RepositoryNotFoundError, DeniedError) as exc:  # not granted, not the user's
            form.show_error("repository", str(exc))
            return
        except FleetError as exc:
            form.dismiss(None)
            self.notify(str(exc), title="spawn failed", severity="error", timeout=15)
            return
        form.dismiss(result)
        if registered is not None:
            self.notify(f"{registered.path} is now repository {registered.name!r} for "
                        f"{self.actor.operator_id}", title="repository registered")  # fmt: skip
        if out.queued is not None:
            self.notify(f"position {out.queued.position}", title="queued")
        elif out.task is not None:
            self.fleet_screen.table.upsert([out.task])
            self.fleet_screen.table.follow_task(out.task.id)  # the cursor goes to it
            self.fleet_screen.set_status()
            self.notify(f"{out.task.short_id} on {out.task.branch}", title="spawned")

    def confirm(self, title: str, body: str, verb: str, task_id: UUID) -> None:
        def done(yes: bool | None) -> None:
            if yes:
                self.run_verb(verb, task_id)

        self.push_screen(ConfirmDialog(title, body), done)

    @work(group="verbs", exit_on_error=False)
    async def run_verb(self, verb: str, task_id: UUID) -> None:
        if self.source is None:
            return
        conductor = self.source.conductor
        ref = str(task_id)
        try:
            if verb == "stop":
                rec = await conductor.stop(self.actor, ref)
                self.notify(f"{rec.short_id} cancelled; its tmux session is gone", title="stopped")
            elif verb == "retry":
                rec = await conductor.retry(self.actor, ref)
                self.notify(f"{rec.short_id}: attempt {rec.retry_count + 1}", title="retrying")
            elif verb == "merge":
                rec = await conductor.merge(self.actor, ref)
                self.notify(f"{rec.short_id}: PR #{rec.pr_number} merged", title="merged")
            elif verb == "delete":
                gone = await conductor.delete(self.actor, ref)
                saved = gone.cleanup.snapshot_dir if gone.cleanup else None
                where = f"; work saved in {saved}" if saved else ""
                self.notify(f"{gone.task.short_id} deleted{where}", title="deleted",
                            timeout=20 if saved else 5)  # fmt: skip
        except FleetError as exc:
            self.notify(str(exc), title=f"{verb} refused", severity="error", timeout=15)

    def open_task(self, task_id: UUID, tab: str = "log") -> None:
        if self.source is not None:
            self.push_screen(TaskScreen(self.source, task_id, tab=tab, clock=self.clock))

    @work(group="verbs", exit_on_error=False)
    async def attach(self, task_id: UUID) -> None:
        """Give the terminal to `tmux attach` on fleet's socket; back here on detach."""
        if self.source is None:
            return
        try:
            cmd = await self.source.conductor.attach_command(self.actor, str(task_id))
        except FleetError as exc:
            self.notify(str(exc), title="cannot attach", severity="warning")
            return
        env = {k: v for k, v in os.environ.items() if k != "TMUX"}  # ours is another server
        with self.suspend():
            await asyncio.to_thread(subprocess.run, cmd, env=env, check=False)

    def action_help(self) -> None:
        self.push_screen(HelpScreen(KEYS, legend()))
