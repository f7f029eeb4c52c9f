"""Fake model provider APIs on 127.0.0.1, speaking the real request and response shapes:
Anthropic Messages (`POST /v1/messages`, `x-api-key`, a forced tool call answered with a
`tool_use` block), OpenAI Responses (`POST /v1/responses`, a bearer token, `text.format`
json_schema answered with an `output_text` in a `message` item) and Gemini generateContent
(`POST /v1beta/models/{model}:generateContent`, `x-goog-api-key`, answered with
`candidates[0].content.parts[0].text`).

What each reviewer answers is scripted per focus (read from the prompt's "## Your focus"): a
list of replies consumed one request at a time, then `approve`. A reply is a verdict
(`approve`, `request_changes`, `comment`), `garbage` (text that is not JSON), `hang` (no
answer until the server stops), or an HTTP status (`429`, `503`: with `Retry-After: 0`, or
`429@date` with an HTTP-date Retry-After). Every request is recorded."""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FOCUS = re.compile(r"## Your focus\n(\w+)")


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    focus: str
    reply: str


@dataclass
class FakeProvider:
    kind: str  # anthropic | openai | gemini
    script: dict[str, list[str]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def replies(self, focus: str | None = None) -> list[str]:
        with self.lock:
            return [s.reply for s in self.seen if focus is None or s.focus == focus]

    def next_reply(self, focus: str) -> str:
        with self.lock:
            queue = self.script.get(focus) or []
            return queue.pop(0) if queue else "approve"

    def answer(self, verdict: str, focus: str) -> dict[str, Any]:
        if verdict == "garbage":
            payload: Any = "Looks fine to me, I guess."
        else:
            comments = (
                []
                if verdict == "approve"
                else [{"path": "calc.py", "line": 3, "body": f"{focus}: validate the input here"}]
            )
            payload = {"verdict": verdict, "summary": f"{focus} review", "comments": comments}
        text = payload if isinstance(payload, str) else json.dumps(payload)
        if self.kind == "anthropic":
            block: dict[str, Any] = (
                {"type": "text", "text": text}
                if isinstance(payload, str)
                else {"type": "tool_use", "id": "toolu_01", "name": "submit_review",
                      "input": payload}
            )  # fmt: skip
            return {"id": "msg_01", "type": "message", "role": "assistant", "model": "m",
                    "content": [block], "stop_reason": "tool_use",
                    "usage": {"input_tokens": 100, "output_tokens": 20}}  # fmt: skip
        if self.kind == "openai":
            return {"id": "resp_01", "object": "response", "status": "completed", "model": "m",
                    "output": [{"type": "message", "id": "msg_01", "role": "assistant",
                                "status": "completed", "content": [
                                    {"type": "output_text", "text": text, "annotations": []}]}],
                    "usage": {"input_tokens": 100, "output_tokens": 20}}  # fmt: skip
        return {"candidates": [{"content": {"role": "model", "parts": [{"text": text}]},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 20},
                "modelVersion": "m"}  # fmt: skip


PATHS = {"anthropic": re.compile(r"^/v1/messages$"), "openai": re.compile(r"^/v1/responses$"),
         "gemini": re.compile(r"^/v1beta/models/[\w.-]+:generateContent$")}  # fmt: skip


def _prompt(kind: str, body: dict[str, Any]) -> str:
    if kind == "anthropic":
        return str(body["messages"][0]["content"])
    if kind == "openai":
        return str(body["input"])
    return str(body["contents"][0]["parts"][0]["text"])


def _authorized(kind: str, headers: Any) -> bool:
    if kind == "anthropic":
        return bool(headers.get("x-api-key")) and headers.get("anthropic-version") == "2023-06-01"
    if kind == "openai":
        return str(headers.get("authorization", "")).startswith("Bearer ")
    return bool(headers.get("x-goog-api-key"))


def serve(fake: FakeProvider) -> FakeProvider:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            return None

        def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", "0"))
            body = json.loads(self.rfile.read(length) or b"{}")
            if not PATHS[fake.kind].match(self.path):
                self._send(404, {"error": {"message": f"no route {self.path}"}})
                return
            if not _authorized(fake.kind, self.headers):
                self._send(401, {"error": {"message": "invalid api key"}})
                return
            m = FOCUS.search(_prompt(fake.kind, body))
            focus = m[1] if m else "?"
            reply = fake.next_reply(focus)
            with fake.lock:
                fake.seen.append(Seen(self.path, dict(self.headers), body, focus, reply))
            if reply == "hang":
                fake.stop.wait()
                return
            if reply.startswith(("429", "5")):
                status = int(reply[:3])
                after = formatdate(usegmt=True) if reply.endswith("@date") else "0"
                self._send(status, {"error": {"type": "rate_limit_error" if status == 429
                                              else "overloaded_error", "message": reply}},
                           {"retry-after": after})  # fmt: skip
                return
            self._send(200, fake.answer(reply, focus))

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    fake.server = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return fake


def shutdown(fake: FakeProvider) -> None:
    fake.stop.set()
    if fake.server is not None:
        fake.server.shutdown()
        fake.server.server_close()
