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

    @property
    def bus(self) -> EventBus:
        return self.conductor.bus


def monitor_config(settings: Settings) -> MonitorConfig:
    interval = settings.monitor_interval_seconds
    return MonitorConfig(
        interval_s=interval,
        deadline_s=max(5.0, interval * 0.9),
        stall_s=settings.stall_minutes * 60,
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
    notify: NotifyService | None = None
    try:
        await conductor.runtime.secrets.ready()  # a wrong master key stops here, one line
        reconciled = ReconcileReport([], [])
        if background:
            reconciled = await monitor.start()
            await conductor.start()
            notify = NotifyService(settings, db, conductor.runtime.secrets.store,
                                   cli_stream=notify_stream)  # fmt: skip
            await notify.start(conductor.bus, monitor.on_cycle)
        yield Engine(settings, db, conductor, monitor, reconciled, notify)
    finally:
        if notify is not None:
            await notify.stop()
        await monitor.stop()
        await conductor.stop_engine()
        await db.close()
