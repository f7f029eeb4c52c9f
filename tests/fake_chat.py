"""Fake Discord webhook and Telegram Bot API servers on 127.0.0.1, speaking their protocols:
Discord answers 204/200 or 429 with `Retry-After` and a JSON `retry_after`; Telegram answers
`{"ok": true, "result": ...}` or `{"ok": false, "error_code": 429, "parameters":
{"retry_after": N}}`. A script of answers (status codes) is consumed one request at a time,
then every request succeeds; `hold` keeps requests open until released. Every request is
recorded with its event id (the X-Fleet-Event-Id header) and the answer it got."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Seen:
    path: str
    event_id: str | None
    body: dict[str, Any]
    status: int


@dataclass
class FakeChat:
    kind: str  # discord | telegram
    script: list[int] = field(default_factory=list)
    retry_after: float = 0.05
    always: int | None = None  # every request gets this status (a receiver that is broken)
    seen: list[Seen] = field(default_factory=list)
    hold: threading.Event | None = None  # set: requests wait until it is set
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def delivered(self) -> dict[str, int]:
        """Event id → how many requests for it were answered 2xx."""
        out: dict[str, int] = {}
        with self.lock:
            for s in self.seen:
                if 200 <= s.status < 300 and s.event_id:
                    out[s.event_id] = out.get(s.event_id, 0) + 1
        return out

    def ids(self) -> list[str | None]:
        with self.lock:
            return [s.event_id for s in self.seen]

    def _answer(self) -> int:
        with self.lock:
            if self.always is not None:
                return self.always
            return self.script.pop(0) if self.script else (204 if self.kind == "discord" else 200)

    def start(self) -> FakeChat:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                fake.arrived.set()
                if fake.hold is not None:
                    fake.hold.wait(60)
                try:
                    body = json.loads(raw or b"{}")
                except ValueError:
                    body = {}
                status = fake._answer()
                with fake.lock:
                    fake.seen.append(Seen(self.path, self.headers.get("X-Fleet-Event-Id"),
                                          body, status))  # fmt: skip
                self._reply(status)

            def _reply(self, status: int) -> None:
                headers: dict[str, str] = {}
                if fake.kind == "discord":
                    if status == 429:
                        headers["Retry-After"] = str(fake.retry_after)
                        doc: Any = {"message": "You are being rate limited.",
                                    "retry_after": fake.retry_after, "global": False}  # fmt: skip
                    elif status == 204:
                        doc = None
                    elif status < 300:
                        doc = {"id": "1", "type": 0}
                    else:
                        doc = {"message": "500: Internal Server Error", "code": 0}
                else:
                    if status == 429:
                        doc = {"ok": False, "error_code": 429,
                               "description": "Too Many Requests: retry later",
                               "parameters": {"retry_after": fake.retry_after}}  # fmt: skip
                    elif status < 300:
                        doc = {"ok": True, "result": {"message_id": len(fake.seen)}}
                    else:
                        doc = {"ok": False, "error_code": status, "description": "error"}
                data = b"" if doc is None else json.dumps(doc).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if data:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
