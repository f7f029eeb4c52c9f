"""The notification service as an engine runs it: the HTTP client, the dispatcher and the
outbox worker (and NATS when configured), started and stopped together."""

from __future__ import annotations

from typing import IO, Any

from fleet_core.auth.secret_store import SecretStore
from fleet_core.config import Settings
from fleet_core.db.database import Database
from fleet_core.events import EventBus
from fleet_core.notify.bus_events import EventQueuer
from fleet_core.notify.channels import DesktopChannel
from fleet_core.notify.delivery import Dispatcher, LocalOperator, Policy
from fleet_core.notify.outbox import OutboxWorker
from fleet_core.notify.settings import ChannelStore


class NotifyService:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        secrets: SecretStore | None,
        *,
        cli_stream: IO[str] | None = None,
        desktop: DesktopChannel | None = None,
    ) -> None:
        self.settings = settings
        self.db = db
        import httpx  # only in an engine that delivers (it loads rich for its CLI)

        self.client = httpx.AsyncClient(
            timeout=httpx.Timeout(settings.notify_timeout_seconds),
            follow_redirects=False,
            headers={"User-Agent": "fleet-notify"},
        )
        self.store = ChannelStore(db, secrets) if secrets is not None else None
        self.nats = None
        if settings.nats_url:
            from fleet_core.notify.nats import NatsPublisher  # only when NATS is configured

            self.nats = NatsPublisher(settings)
        self.dispatcher = Dispatcher(
            db,
            self.store,
            self.client,
            policy=Policy(
                max_attempts=settings.notify_max_attempts,
                base_s=settings.notify_retry_base_seconds,
                max_s=settings.notify_retry_max_seconds,
            ),
            telegram_api_url=settings.telegram_api_url,
            local=LocalOperator(settings.operator, settings.tier, settings.notify_desktop),
            cli_stream=cli_stream,
            desktop=desktop,
        )
        self.worker = OutboxWorker(
            db,
            self.dispatcher,
            engine_id=settings.host_id,
            poll_s=settings.notify_poll_seconds,
            lease_s=settings.notify_lease_seconds,
            after=self._pump if self.nats else None,
        )

        self.queuer = EventQueuer(db, settings.host_id)

    def health(self) -> dict[str, Any]:
        """The worker's state and NATS's, for /healthz (no operator's data in it)."""
        st = self.worker.stats
        doc: dict[str, Any] = {
            "worker": "running" if self.worker.running else "stopped",
            "listening": st.listening,
            "processed": st.processed,
            "errors": st.errors,
        }
        if self.nats is not None:
            doc["nats"] = "error" if self.nats.last_error else "ok"
        return doc

    async def _pump(self) -> int:
        from fleet_core.notify.nats import pump

        assert self.nats is not None
        return await pump(self.db, self.nats, self.settings.nats_max_age_hours * 3600)

    async def start(self, bus: EventBus | None = None, on_cycle: list[Any] | None = None) -> None:
        """Start the worker; with `bus` (and the monitor's `on_cycle` listeners), also queue
        stalls, pauses and an unhealthy monitor."""
        if bus is not None:
            self.queuer.attach(bus, on_cycle)
        await self.worker.start()

    async def stop(self, drain_s: float = 5.0) -> None:
        """Stop; a running worker first delivers (and publishes) what is due, for at most
        `drain_s` (what is left waits in the database for the next engine)."""
        try:
            await self.queuer.detach()
            await self.worker.stop(drain_s)
        finally:
            if self.nats is not None:
                await self.nats.close()
            await self.client.aclose()


async def send_test(
    service: NotifyService, operator_id: str, channel: str | None = None
) -> dict[str, dict[str, object]]:
    """A test message on each of the operator's channels (or `channel`), sent now, not
    through the outbox; per channel: ok, status, error."""
    from uuid import uuid4

    from fleet_core.notify.channels import Message
    from fleet_core.notify.settings import ChannelNotFoundError, validate_channel

    if channel is not None:
        validate_channel(channel)
    working = await service.dispatcher.channels_for(operator_id)
    chosen = {cfg.channel: c for cfg, c in working if channel in (None, cfg.channel)}
    if channel == "cli":
        chosen = {"cli": service.dispatcher.cli}
    if not chosen:
        raise ChannelNotFoundError(
            f"{operator_id} has no {channel or 'notification'} channel set up "
            "(fleet notify set discord|telegram|desktop)"
        )
    msg = Message(
        event_id=f"test:{uuid4()}",
        event_type="test",
        operator_id=operator_id,
        task_id=None,
        title="fleet test notification",
        summary=f"a test from fleet for {operator_id}: this channel works",
        kind="good",
    )
    out: dict[str, dict[str, object]] = {}
    for name, ch in sorted(chosen.items()):
        res = await ch.send(msg)
        out[name] = {"ok": res.ok, "status": res.status, "error": res.error}
    return out
