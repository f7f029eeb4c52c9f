"""Forges that cannot answer: per repository, how many monitor cycles in a row its forge
failed and the last error. After `threshold` cycles it is a problem the operator sees (`fleet
status`, the console's header, the API's task detail as `forge_error`). The engine keeps it in
memory and writes it to a small JSON file, which processes without a monitor (the CLI) read."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

THRESHOLD = 3  # cycles without an answer before it is shown
PROBLEMS_FILE = "problems.json"  # in the forges' state directory, <data_dir>/forge


class ForgeProblems:
    def __init__(self, path: Path, threshold: int = THRESHOLD) -> None:
        self.path = path
        self.threshold = threshold
        self._state: dict[str, dict[str, Any]] = {}  # repo -> {"error", "cycles"}
        self._dirty = False
        self._local = False  # this process polls (else the file is the source)

    def failed(self, repo: str, error: str) -> None:
        self._local = True
        entry = self._state.setdefault(repo, {"error": error, "cycles": 0})
        entry["error"] = error
        entry["cycles"] += 1
        self._dirty = True

    def answered(self, repo: str) -> None:
        self._local = True
        if self._state.pop(repo, None) is not None:
            self._dirty = True

    async def save(self) -> None:
        if not self._dirty:
            return
        self._dirty = False
        shown = self.problems()
        await asyncio.to_thread(_write, self.path, shown)

    def problems(self) -> dict[str, str]:
        """Repository → what its forge says, for those past the threshold."""
        if not self._local:
            return read(self.path)
        return {
            repo: f"{e['error']} (no answer for {e['cycles']} cycles)"
            for repo, e in sorted(self._state.items())
            if e["cycles"] >= self.threshold
        }

    def problem(self, repo: str) -> str | None:
        return self.problems().get(repo)


def read(path: Path) -> dict[str, str]:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {str(k): str(v) for k, v in doc.items()}


def _write(path: Path, doc: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(doc, indent=1))
    os.replace(tmp, path)
