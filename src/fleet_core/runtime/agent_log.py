"""Each agent's output, kept in a file under the data dir from its first byte.

tmux's `pipe-pane` feeds `logpipe.py` (rotated at a size cap), started before the launcher is
released (`go`), so nothing the agent prints is lost to a late pipe or to the pane's history
limit, and `fleet logs`, the console and the API keep reading it after the session is gone.
The file keeps the raw stream (`\\r\\n`, colours, JSON events); `read_tail` gives readable
lines: escapes removed, carriage-return overwrites resolved, streamed JSON rendered.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any

from fleet_core.runtime import launch, logpipe

MAX_BYTES = 8_000_000  # per file; one rotated file is kept beside it
TAIL_READ_BYTES = 512_000
ENDED_READ_BYTES = 64_000  # where the launcher's last line is looked for
_ESCAPE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def pipe_command(path: Path, max_bytes: int = MAX_BYTES) -> str:
    """The shell command tmux runs for `pipe-pane` (stdlib only, without `site`)."""
    argv = [sys.executable, "-S", logpipe.__file__, str(path), str(max_bytes)]
    return "exec " + " ".join(shlex.quote(a) for a in argv)


def read_raw(path: Path, limit: int = TAIL_READ_BYTES) -> bytes:
    """The last `limit` bytes of the log, across its rotated file; b"" when there is none."""
    chunks: list[bytes] = []
    need = limit
    for candidate in (path, path.with_name(path.name + ".1")):
        try:
            with open(candidate, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - need))
                data = fh.read(need)
        except OSError:
            continue
        chunks.insert(0, data)
        need -= len(data)
        if need <= 0:
            break
    return b"".join(chunks)


def clean_line(line: str) -> str:
    """A terminal line as it reads: escapes out, the text after the last carriage return."""
    line = _ESCAPE.sub("", line.rstrip("\r"))
    if "\r" in line:
        line = line.rsplit("\r", 1)[-1]
    return _CONTROL.sub("", line).rstrip()


def readable(raw: bytes) -> list[str]:
    """The raw stream as lines to read (streamed JSON rendered, blank lines dropped)."""
    out: list[str] = []
    for line in raw.decode("utf-8", "replace").split("\n"):
        text = clean_line(line)
        if not text:
            continue
        out.extend(render(text))
    return out


def read_tail(path: Path, lines: int) -> list[str] | None:
    """The last `lines` readable lines; None when there is no log file."""
    if not path.exists():
        return None
    return readable(read_raw(path))[-lines:]


def render(line: str) -> list[str]:
    """A JSON event of a streaming CLI (claude's stream-json, codex --json, gemini's
    stream-json) as readable lines; any other line as it is."""
    if not line.startswith("{"):
        return [line]
    try:
        doc = json.loads(line)
    except ValueError:
        return [line]
    if not isinstance(doc, dict):
        return [line]
    return [s for s in _event(doc) if s.strip()]


def _clip(text: object, limit: int = 400) -> str:
    s = " ".join(str(text).split()) if not isinstance(text, str) else text.rstrip()
    return s if len(s) <= limit else s[:limit] + " …"


def _content(content: Any) -> list[str]:
    """Claude's message content blocks."""
    if isinstance(content, str):
        return content.splitlines()
    out: list[str] = []
    for block in content if isinstance(content, list) else []:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            out += str(block.get("text", "")).splitlines()
        elif kind == "tool_use":
            out.append(f"[tool] {block.get('name')}: {_clip(json.dumps(block.get('input')), 200)}")
        elif kind == "tool_result":
            body = block.get("content")
            if isinstance(body, list):
                body = " ".join(str(b.get("text", "")) for b in body if isinstance(b, dict))
            out.append(f"[tool result] {_clip(body or '', 200)}")
        elif kind == "thinking":
            out.append(f"[thinking] {_clip(block.get('thinking', ''), 200)}")
    return out


def _event(doc: dict[str, Any]) -> list[str]:
    kind = doc.get("type")
    # Claude Code: system/init, assistant and user messages, the result.
    if kind == "system":
        if doc.get("subtype") == "init":
            return [f"[claude] session started: model {doc.get('model')}, "
                    f"{doc.get('permissionMode')} mode"]  # fmt: skip
        return []
    if kind in ("assistant", "user") and isinstance(doc.get("message"), dict):
        lines = _content(doc["message"].get("content"))
        if doc.get("error"):
            lines.append(f"[error] {doc['error']}")
        return lines
    if kind == "result" and "subtype" in doc:
        state = "error" if doc.get("is_error") else doc.get("subtype")
        return [f"[result: {state}] {_clip(doc.get('result', ''))}"]
    # codex exec --json: thread/turn/item events.
    if kind in ("thread.started", "turn.started"):
        return []
    if kind == "error" or (kind == "turn.failed" and isinstance(doc.get("error"), dict)):
        err = doc.get("error")
        message = doc.get("message") or (err.get("message") if isinstance(err, dict) else err)
        return [f"[error] {message}"]
    if kind == "turn.completed":
        return ["[turn completed]"]
    if kind in ("item.started", "item.updated", "item.completed") and isinstance(
        doc.get("item"), dict
    ):
        return _codex_item(kind, doc["item"])
    # Gemini CLI stream-json: init, message, tool_use, tool_result, error, result.
    if kind == "init":
        return [f"[gemini] session started: model {doc.get('model')}"]
    if kind == "message":
        if doc.get("role") == "user":
            return []  # the prompt, echoed
        return str(doc.get("content", "")).splitlines()
    if kind == "tool_use":
        return [f"[tool] {doc.get('tool_name')}: {_clip(json.dumps(doc.get('parameters')), 200)}"]
    if kind == "tool_result":
        return [f"[tool result] {doc.get('status')}: {_clip(doc.get('output', ''), 200)}"]
    if kind == "result":
        return [f"[result: {doc.get('status')}]"]
    return [_clip(json.dumps(doc), 400)]


def _codex_item(kind: str, item: dict[str, Any]) -> list[str]:
    it = item.get("type")
    if it == "agent_message" and kind == "item.completed":
        return str(item.get("text", "")).splitlines()
    if it == "reasoning" and kind == "item.completed":
        return [f"[reasoning] {_clip(item.get('text', ''), 300)}"]
    if it == "command_execution":
        if kind == "item.started":
            return [f"$ {item.get('command')}"]
        if kind == "item.completed":
            return [
                f"[exit {item.get('exit_code')}] {_clip(item.get('aggregated_output', ''), 300)}"
            ]
        return []
    if it == "file_change" and kind == "item.completed":
        changes = item.get("changes") or []
        paths = ", ".join(str(c.get("path")) for c in changes if isinstance(c, dict))
        return [f"[files changed] {paths}"]
    if it == "error":
        return [f"[error] {item.get('message')}"]
    if it == "todo_list" or kind != "item.completed":
        return []
    return [f"[{it}] {_clip(json.dumps(item), 200)}"]


def attempt_ended(path: Path) -> bool | None:
    """Whether the log's last attempt ends with the launcher's last line (its output is all
    there); None when there is no log file."""
    if not path.exists():
        return None
    raw = read_raw(path, ENDED_READ_BYTES)
    start = raw.rfind(launch.START_LINE.encode())
    return max(raw.rfind(line.encode()) for line in launch.END_LINES) > start
