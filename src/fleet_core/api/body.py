"""Request bodies are JSON, whatever the client forgot to say: `curl -d '{...}'` sends
`Content-Type: application/x-www-form-urlencoded`, and some clients send none. No route takes a
form, so under /api/ a body with no content type or curl's default one is read as JSON. Any
other type is refused with a 400 that names the header (see `errors.install`).

Reading a form-encoded body as JSON opens no cross-site hole: every route that takes a body
needs an `Authorization: Bearer` header, which a browser does not send across origins without
asking first (CORS preflight)."""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

JSON = b"application/json"
READ_AS_JSON = frozenset({b"", b"application/x-www-form-urlencoded"})
WITH_BODY = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def media_type(value: bytes) -> bytes:
    """`application/json; charset=utf-8` → `application/json`."""
    return value.split(b";", 1)[0].strip().lower()


class JsonBodies:
    """ASGI middleware: a missing or form-urlencoded content type under /api/ becomes JSON."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in WITH_BODY
            and scope["path"].startswith("/api/")
        ):
            given = next((v for k, v in scope["headers"] if k == b"content-type"), b"")
            if media_type(given) in READ_AS_JSON:
                others = [(k, v) for k, v in scope["headers"] if k != b"content-type"]
                scope = {**scope, "headers": [*others, (b"content-type", JSON)]}
        await self.app(scope, receive, send)
