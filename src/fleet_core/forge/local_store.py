"""The local forge's PR records for one remote: one small file per PR and per branch, so a call
reads and writes only the PRs it is about, whatever the number of PRs ever made.

    next.json          the next PR number
    prs/<n>.json       PR n: number, branch, base, state, head_sha, ..., comments
    branches/<hash>    the number of a branch's latest PR (hash: of the branch name)

Writes are atomic (write, then rename) and happen under the remote's lock (the forge holds it);
reads need none. A `state.json` of an earlier version (every PR in one file) is split once.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from fleet_core.forge.base import ForgeError
from fleet_core.forge.local_ci import write_json

LEGACY = "state.json"


class PrStore:
    def __init__(self, directory: Path) -> None:
        self.dir = directory

    @property
    def legacy(self) -> Path:
        return self.dir / LEGACY

    def _pr_file(self, number: int) -> Path:
        return self.dir / "prs" / f"{int(number)}.json"

    def _branch_file(self, branch: str) -> Path:
        return self.dir / "branches" / hashlib.sha256(branch.encode()).hexdigest()[:32]

    def get(self, number: int) -> dict[str, Any] | None:
        path = self._pr_file(number)
        try:
            record = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ForgeError(f"cannot read {path}: {exc}") from None
        if not isinstance(record, dict) or record.get("number") != number:
            raise ForgeError(f"{path} is not the record of PR #{number}")
        return record

    def put(self, record: dict[str, Any]) -> None:
        write_json(self._pr_file(int(record["number"])), record)

    def number_of(self, branch: str) -> int | None:
        path = self._branch_file(branch)
        try:
            entry = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ForgeError(f"cannot read {path}: {exc}") from None
        return int(entry["number"]) if entry.get("branch") == branch else None

    def allocate(self, branch: str) -> int:
        """A new PR number for `branch` (the caller holds the remote's lock)."""
        path = self.dir / "next.json"
        try:
            number = int(json.loads(path.read_text())["next"])
        except FileNotFoundError:
            number = 1
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ForgeError(f"cannot read {path}: {exc}") from None
        write_json(path, {"next": number + 1})
        write_json(self._branch_file(branch), {"branch": branch, "number": number})
        return number

    def split_legacy(self) -> None:
        """Move an earlier version's state.json into the per-PR files (under the lock)."""
        try:
            state = json.loads(self.legacy.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            raise ForgeError(f"cannot read {self.legacy}: {exc}") from None
        for record in state.get("prs", {}).values():
            self.put(record)
        for branch, number in state.get("branches", {}).items():
            write_json(self._branch_file(branch), {"branch": branch, "number": int(number)})
        write_json(self.dir / "next.json", {"next": int(state.get("next", 1))})
        os.replace(self.legacy, self.dir / f"{LEGACY}.split")
