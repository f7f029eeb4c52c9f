"""Logging to a JSON-lines file under the data dir; never to the terminal."""

from __future__ import annotations

import json
import logging
import logging.handlers
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path

_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
# Set by the API for the duration of a request: every record logged meanwhile carries it.
request_id: ContextVar[str | None] = ContextVar("request_id", default=None)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id.get()
        if rid is not None:
            doc["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_file_logging(log_dir: Path, level: str = "INFO") -> Path:
    """Send every log record to `log_dir/fleet.log` (rotated) and nowhere else."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "fleet.log"
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=10_000_000, backupCount=5)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    logging.captureWarnings(True)
    return path
