"""`fleet --headless`: the engine (monitor, retries, queue) and the HTTP API served by uvicorn
in the same event loop. SIGTERM or SIGINT: uvicorn stops accepting, finishes the requests in
flight, then the engine stops cleanly; agents keep running in tmux."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
import sys
from collections.abc import Iterator

import uvicorn

from fleet_core.api.app import create_app
from fleet_core.auth.keys import KeyStore
from fleet_core.config import Settings
from fleet_core.db.database import Tenant
from fleet_core.engine_role import served_engine
from fleet_core.runtime.sandbox import SandboxMode

log = logging.getLogger(__name__)


class Server(uvicorn.Server):
    """uvicorn without its own signal handling: ours sets `should_exit` (DESIGN: one loop)."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        return None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # uvicorn >= 0.29
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        host, port = self.config.host, self.config.port
        print(f"fleet: serving http://{host}:{port} (API /api/fleet, docs /docs)", flush=True)


async def serve(settings: Settings, host: str, port: int) -> None:
    if settings.sandbox is None:  # a server never starts an agent unsandboxed unless told
        settings = settings.model_copy(update={"sandbox": SandboxMode.REQUIRED})
    async with served_engine(settings, "headless", tenant=Tenant.admin(), notify_stream=sys.stdout,
                             on_role=lambda _e: print("fleet: this server is the engine now",
                                                      flush=True)) as engine:  # fmt: skip
        if engine.serving != "engine":
            print(f"fleet: another process is the engine here; this server is its "
                  f"{engine.serving}", flush=True)  # fmt: skip
        keys = KeyStore(engine.db, KeyStore.load_master_key(settings))
        await keys.ensure_signing_key()
        app = create_app(engine, keys)
        config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
        )
        server = Server(config)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
        log.info("serving", extra={"host": host, "port": port})
        await server.serve()
    print("fleet: stopped; agents keep running", flush=True)
    from fleet_core.background_run import hand_over

    said = await hand_over(settings)
    if said:
        print(said, flush=True)
