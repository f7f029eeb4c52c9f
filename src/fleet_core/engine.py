"""The engine as the console, the headless server and the demo run it: the database, the
conductor (with its queue loop) and the monitor (reconcile, then its cycle), started and
stopped together. Stopping leaves every agent running in tmux."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import IO

from fleet_core.conductor import Conductor
from fleet_core.config import Settings
from fleet_core.db.connect import open_database
from fleet_core.db.database import Database
from fleet_core.events import EventBus
from fleet_core.monitor import Monitor, MonitorConfig, ReconcileReport
from fleet_core.notify.service import NotifyService


@dataclass
class Engine:
    settings: Settings
    db: Database
    conductor: Conductor
    monitor: Monitor
    reconciled: ReconcileReport
    notify: NotifyService | None = None  # the outbox worker (None: background=False)
    notify_stream: IO[str] | None = None
    # Who does the engine's background work on this host and data dir (see engine_role):
    # "engine" (this process), "client of <role> pid N" (another process), or "" (nobody
    # asked: `background=False` in a test or a one-shot view).
    serving: str = ""

    @property
    def bus(self) -> EventBus:
        return self.conductor.bus

    @property
    def active(self) -> bool:
        """Whether this process runs the background work (monitor, queue loop, outbox)."""
        return self.notify is not None

    async def take_part(self) -> None:
        """Start the background work: reconcile, the monitor's cycle, the queue loop and the
        outbox worker (what `running_engine(background=True)` does at start; a client that
        takes the engine's role over calls it later). Idempotent; when it fails, what it had
        started is stopped again."""
        if self.notify is not None:
            return
        notify = NotifyService(self.settings, self.db, self.conductor.runtime.secrets.store,
                               cli_stream=self.notify_stream)  # fmt: skip
        await notify.start(self.conductor.bus, self.monitor.on_cycle)
        try:
            self.reconciled = await self.monitor.start()
        except BaseException:
            await notify.stop(drain_s=0)
            raise
        await self.conductor.start()  # only creates its queue loop's task
        self.notify = notify


def monitor_config(settings: Settings) -> MonitorConfig:
    interval = settings.monitor_interval_seconds
    return MonitorConfig(
        interval_s=interval,
        deadline_s=max(5.0, interval * 0.9),
        stall_s=settings.stall_minutes * 60,
        ci_start_s=settings.ci_start_minutes * 60,
    )


@asynccontextmanager
async def running_engine(
    settings: Settings,
    *,
    bus: EventBus | None = None,
    config: MonitorConfig | None = None,
    background: bool = True,
    notify_stream: IO[str] | None = None,
) -> AsyncIterator[Engine]:
    """The engine, started; with `background=False` only the verbs work (no reconcile, no
    monitor cycle, no queue loop, no outbox worker): what a read-mostly view or a test needs.
    `notify_stream` gets the `[FLEET] ...` fallback line (the headless server's stdout)."""
    db = await open_database(settings)
    conductor = Conductor.from_settings(settings, db, bus=bus)
    monitor = Monitor(conductor, config or monitor_config(settings))
    engine: Engine | None = None
    try:
        await conductor.runtime.secrets.ready()  # a wrong master key stops here, one line
        engine = Engine(settings, db, conductor, monitor, ReconcileReport([], []),
                        notify_stream=notify_stream)  # fmt: skip
        if background:
            await engine.take_part()
        yield engine
    finally:
        if engine is not None and engine.notify is not None:
            await engine.notify.stop()
        await monitor.stop()
        await conductor.stop_engine()
        await db.close()
