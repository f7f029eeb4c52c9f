"""Per-repository settings: `.fleet.toml` at the repository root, overridden by the user's
`[repos."<path>"]` table in fleet.toml (DESIGN §9)."""

from __future__ import annotations

import shlex
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from fleet_core.errors import ConfigError

FILE_NAME = ".fleet.toml"


class RepoConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    setup: list[str] | None = None  # argv run in each new worktree (a string is split, no shell)
    setup_timeout_seconds: float = Field(default=600, gt=0, le=7200)
    ci: list[str] | None = None  # the local forge's CI command
    forge: Literal["github", "local"] | None = None
    base: str | None = None
    runtime: Literal["local", "container"] | None = None  # where this repository's agents run

    @field_validator("setup", "ci", mode="before")
    @classmethod
    def _argv(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = shlex.split(value)
        if isinstance(value, list) and not value:
            raise ValueError("must name a command")
        return value


def load_repo_config(repo_root: Path, user: dict[str, dict[str, Any]] | None = None) -> RepoConfig:
    """The repository's file first, then the user's entry for this path on top."""
    merged: dict[str, Any] = {}
    path = repo_root / FILE_NAME
    if path.is_file():
        try:
            merged.update(tomllib.loads(path.read_text()))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from None
    for key, entry in (user or {}).items():
        if Path(key).expanduser().resolve() == repo_root.resolve():
            merged.update(entry)
    try:
        return RepoConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"config error: {field} (for {repo_root}): {err['msg']}") from None
