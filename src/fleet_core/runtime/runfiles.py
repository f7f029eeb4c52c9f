"""The run directory's files: 0600, written whole; what the launcher reads."""

from __future__ import annotations

import os
from pathlib import Path

from fleet_core.errors import BadInputError


def release(rd: Path, go: bool) -> None:
    """Tell the waiting launcher to start (or not); atomic, so it never reads half a file."""
    write_atomic(rd / "go", b"1" if go else b"0")


def write_atomic(path: Path, data: bytes) -> None:
    """A 0600 file that readers see whole or not at all (temp file, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    write_private(tmp, data)
    os.replace(tmp, path)


def remove_dir(directory: Path) -> None:
    if directory.exists():
        for leftover in directory.iterdir():
            leftover.unlink()
        directory.rmdir()


def write_fields(path: Path, fields: list[str]) -> None:
    if any("\0" in f for f in fields):
        raise BadInputError("env", "values must not contain NUL")
    write_private(path, "\0".join(fields).encode())


def write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
