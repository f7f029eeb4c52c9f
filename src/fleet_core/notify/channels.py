"""The channels a notification goes out on: Discord (webhook embed), Telegram (Bot API
sendMessage, MarkdownV2), the desktop (notify-send) and the CLI line.

Each `send` returns an `Outcome` and never raises: a channel that fails says whether to try
again (and after how long, when the receiver said: Retry-After) or to give up now (a 4xx
other than 408 and 429: the request itself is wrong). Every delivery carries the event's id
(`X-Fleet-Event-Id` header and in the text), so a receiver can drop a repeat.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import shutil
import time
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:  # httpx (and the CLI helpers it loads) only when delivering
    import httpx


log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-Fleet-Event-Id"
GREEN, RED, YELLOW = 0x2ECC71, 0xE74C3C, 0xF1C40F
COLOURS = {"good": GREEN, "bad": RED, "attention": YELLOW}
MARKDOWN_V2_RESERVED = "_*[]()~`>#+-=|{}.!\\"


@dataclass(frozen=True)
class Message:
    event_id: str  # the receiver-side id: the outbox row's dedup key
    event_type: str  # e.g. task.merged
    operator_id: str
    task_id: str | None
    title: str
    summary: str
    kind: str  # good | bad | attention
    branch: str | None = None
    pr: str | None = None  # a link or "#N"

    def line(self) -> str:
        """The CLI form: `[FLEET] <type> | <task id> | <summary>`."""
        return f"[FLEET] {self.event_type} | {self.task_id or '-'} | {self.summary}"


@dataclass(frozen=True)
class Outcome:
    ok: bool
    status: int | None = None
    retry_after: float | None = None  # seconds, when the receiver said
    permanent: bool = False  # trying again cannot help
    error: str | None = None


class Channel(Protocol):
    name: str

    async def send(self, msg: Message) -> Outcome: ...


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def http_outcome(resp: httpx.Response, body_retry_after: float | None = None) -> Outcome:
    code = resp.status_code
    if 200 <= code < 300:
        return Outcome(True, code)
    retry_after = parse_retry_after(resp.headers.get("retry-after"))
    if body_retry_after is not None:
        retry_after = max(retry_after or 0.0, body_retry_after)
    permanent = 400 <= code < 500 and code not in (408, 429)
    return Outcome(False, code, retry_after, permanent, f"HTTP {code}: {resp.text[:200]}")


def _number(doc: Any, *path: str) -> float | None:
    for key in path:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return float(doc) if isinstance(doc, int | float) and not isinstance(doc, bool) else None


async def post_json(
    client: httpx.AsyncClient, url: str, body: dict[str, Any], event_id: str
) -> httpx.Response | Outcome:
    import httpx

    try:
        return await client.post(url, json=body, headers={EVENT_ID_HEADER: event_id})
    except httpx.TimeoutException:
        return Outcome(False, None, None, False, "timed out")
    except httpx.HTTPError as exc:
        return Outcome(False, None, None, False, f"{type(exc).__name__}: {exc}"[:200])


class DiscordChannel:
    """A webhook: one embed (title, type, task, summary, PR, branch), coloured by kind."""

    name = "discord"

    def __init__(self, client: httpx.AsyncClient, webhook_url: str) -> None:
        self.client = client
        self.url = webhook_url

    @staticmethod
    def body(msg: Message) -> dict[str, Any]:
        fields = [{"name": "Type", "value": msg.event_type, "inline": True}]
        if msg.task_id:
            fields.append({"name": "Task", "value": msg.task_id, "inline": True})
        if msg.pr:
            fields.append({"name": "PR", "value": msg.pr, "inline": True})
        if msg.branch:
            fields.append({"name": "Branch", "value": msg.branch, "inline": False})
        embed = {
            "title": msg.title[:256],
            "description": msg.summary[:4000],
            "color": COLOURS.get(msg.kind, YELLOW),
            "fields": fields,
            "footer": {"text": f"fleet {msg.event_id}"},
        }
        return {"username": "fleet", "embeds": [embed], "allowed_mentions": {"parse": []}}

    async def send(self, msg: Message) -> Outcome:
        sep = "&" if "?" in self.url else "?"
        resp = await post_json(self.client, f"{self.url}{sep}wait=true", self.body(msg),
                               msg.event_id)  # fmt: skip
        if isinstance(resp, Outcome):
            return resp
        body_after = None
        if resp.status_code == 429:
            try:
                body_after = _number(resp.json(), "retry_after")
            except ValueError:
                body_after = None
        return http_outcome(resp, body_after)


def escape_markdown_v2(text: str) -> str:
    """Every character Telegram's MarkdownV2 reserves, backslash-escaped."""
    return "".join("\\" + c if c in MARKDOWN_V2_RESERVED else c for c in text)


class TelegramChannel:
    """Bot API sendMessage to one chat, MarkdownV2 with every reserved character escaped."""

    name = "telegram"

    def __init__(
        self, client: httpx.AsyncClient, api_url: str, bot_token: str, chat_id: str
    ) -> None:
        self.client = client
        self.url = f"{api_url.rstrip('/')}/bot{bot_token}/sendMessage"
        self.chat_id = chat_id

    @staticmethod
    def text(msg: Message) -> str:
        e = escape_markdown_v2
        lines = [f"*{e(msg.title)}*", e(msg.summary), f"type: `{e(msg.event_type)}`"]
        if msg.task_id:
            lines.append(f"task: `{e(msg.task_id)}`")
        if msg.branch:
            lines.append(f"branch: `{e(msg.branch)}`")
        if msg.pr:
            lines.append(f"PR: {e(msg.pr)}")
        lines.append(f"_{e('fleet ' + msg.event_id)}_")
        return "\n".join(lines)

    async def send(self, msg: Message) -> Outcome:
        body = {
            "chat_id": self.chat_id,
            "text": self.text(msg),
            "parse_mode": "MarkdownV2",
            "disable_web_page_preview": True,
        }
        resp = await post_json(self.client, self.url, body, msg.event_id)
        if isinstance(resp, Outcome):
            return resp
        body_after = None
        if resp.status_code == 429:
            try:
                body_after = _number(resp.json(), "parameters", "retry_after")
            except ValueError:
                body_after = None
        out = http_outcome(resp, body_after)
        if not out.ok and out.error:  # never log the token that is in the URL
            out = Outcome(out.ok, out.status, out.retry_after, out.permanent,
                          out.error.replace(self.url, "<telegram>"))  # fmt: skip
        return out


class DesktopChannel:
    """`notify-send`, for the operator at this machine; absent → a permanent failure."""

    name = "desktop"

    def __init__(self, binary: str | None = None, timeout_s: float = 5.0) -> None:
        self.binary = binary or shutil.which("notify-send")
        self.timeout_s = timeout_s

    async def send(self, msg: Message) -> Outcome:
        if self.binary is None:
            return Outcome(False, None, None, True, "notify-send is not installed")
        urgency = "critical" if msg.kind == "bad" else "normal"
        try:
            proc = await asyncio.create_subprocess_exec(
                self.binary, "-a", "fleet", "-u", urgency, msg.title, msg.summary,
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
        except OSError as exc:
            return Outcome(False, None, None, True, f"notify-send: {exc.strerror}")
        try:
            async with asyncio.timeout(self.timeout_s):
                _, err = await proc.communicate()
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return Outcome(False, None, None, False, "notify-send timed out")
        if proc.returncode != 0:
            text = err.decode(errors="replace").strip()[:200]
            return Outcome(False, proc.returncode, None, False, f"notify-send: {text}")
        return Outcome(True, 0)


class CliChannel:
    """The fallback: the `[FLEET] ...` line in the log and, on a headless server, on stdout."""

    name = "cli"

    def __init__(self, stream: IO[str] | None = None) -> None:
        self.stream = stream

    async def send(self, msg: Message) -> Outcome:
        line = msg.line()
        log.warning(line, extra={"event_id": msg.event_id, "operator": msg.operator_id})
        if self.stream is not None:
            try:
                print(line, file=self.stream, flush=True)
            except (OSError, ValueError) as exc:
                log.warning("cannot print the notification line: %s", exc)
        return Outcome(True, None)
