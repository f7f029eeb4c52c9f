"""Checks on names and paths that reach git, tmux and the file system."""

from __future__ import annotations

import re
from pathlib import Path

from fleet_core.errors import BadInputError

BRANCH_RE = re.compile(r"^[A-Za-z0-9._/-]+$")
MAX_BRANCH = 128
# A model name is one element of the agent's argv: never an option (no leading '-'), no
# spaces, quotes, braces (adapter placeholders) or control characters.
MODEL_RE = re.compile(r"^[A-Za-z0-9._:/@+][A-Za-z0-9._:/@+-]{0,99}$")
MODEL_RULE = "1-100 characters of A-Z a-z 0-9 . _ : / @ + -, not starting with '-'"


def validate_branch(name: str, field: str = "branch") -> str:
    """[A-Za-z0-9._/-]+, at most 128 characters, no '..', no leading '-', plus git's own
    refname rules that would otherwise fail later (no '//', no trailing '/', '.' or '.lock')."""
    if not name:
        raise BadInputError(field, "must not be empty")
    if "\0" in name:
        raise BadInputError(field, "must not contain NUL")
    if len(name) > MAX_BRANCH:
        raise BadInputError(field, f"is {len(name)} characters; at most {MAX_BRANCH}")
    if not BRANCH_RE.match(name):
        raise BadInputError(field, f"{name!r} may only use letters, digits and . _ / -")
    if name.startswith("-"):
        raise BadInputError(field, f"{name!r} must not start with '-'")
    if ".." in name or "//" in name:
        raise BadInputError(field, f"{name!r} must not contain '..' or '//'")
    if name.startswith("/") or name.endswith(("/", ".", ".lock")):
        raise BadInputError(field, f"{name!r} must not start with '/' or end in '/', '.', '.lock'")
    if any(part.startswith(".") for part in name.split("/")):
        raise BadInputError(field, f"{name!r}: no path component may start with '.'")
    return name


def validate_model(value: object, field: str = "model") -> str:
    """The one check of a model name, wherever one enters (CLI, API, console, fleet.toml)."""
    if not isinstance(value, str) or not MODEL_RE.fullmatch(value):
        raise BadInputError(field, f"must be {MODEL_RULE}, got {value!r}")
    return value


def path_under(base: Path, *parts: str, field: str = "path") -> Path:
    """base/parts, resolved, refused unless it stays inside base (no traversal, no links out)."""
    root = base.resolve()
    for part in parts:
        if not part or "\0" in part:
            raise BadInputError(field, "empty or NUL path component")
    target = root.joinpath(*parts).resolve()
    if target == root or root not in target.parents:
        raise BadInputError(field, f"{'/'.join(parts)!r} resolves outside {root}")
    return target
