"""Settings: `fleet.toml` in the platformdirs config dir, overridden by FLEET_* variables."""

from __future__ import annotations

import getpass
import os
import socket
import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from fleet_core.errors import BadInputError, ConfigError
from fleet_core.models import OPERATOR_ID_RE, Tier
from fleet_core.router import ModelRouter
from fleet_core.runtime.sandbox import NetworkMode, SandboxMode

APP_NAME = "fleet"
ENV_PREFIX = "FLEET_"
SECRET_FIELDS = frozenset({"database_url", "engine_database_url"})
HIDDEN_FIELDS = frozenset({"secrets"})


def config_path() -> Path:
    """Where `fleet.toml` is read from (FLEET_CONFIG overrides the platform default)."""
    explicit = os.environ.get("FLEET_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return Path(platformdirs.user_config_dir(APP_NAME)) / "fleet.toml"


def _default_operator() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = f"uid{os.getuid()}"
    return name if OPERATOR_ID_RE.match(name) else "operator"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    operator: str = Field(default_factory=_default_operator, pattern=OPERATOR_ID_RE.pattern)
    tier: Tier = Tier.SOVEREIGN
    database_url: str | None = None
    engine_database_url: str | None = None
    data_dir: Path = Field(default_factory=lambda: Path(platformdirs.user_data_dir(APP_NAME)))
    pg_bin: Path | None = None
    pg_dir: Path | None = None
    pg_user: str = Field(default="fleetpg", pattern=r"^[a-z_][a-z0-9_-]{0,30}$")
    host_id: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    worktree_dir: Path | None = None
    kill_grace_seconds: float = Field(default=5.0, ge=0, le=300)
    # The agents' sandbox (bubblewrap): required | auto | off; unset: required for
    # `fleet --headless`, auto for the console and the CLI. Network: slirp | none | host.
    sandbox: SandboxMode | None = None
    sandbox_network: NetworkMode = NetworkMode.SLIRP
    # When fleet runs as root, agents run as this unprivileged user (created if missing).
    agent_user: str = Field(default="fleet-agent", pattern=r"^[a-z_][a-z0-9_-]{0,30}$")
    # Per local agent (a cgroup each, where the machine has one): memory and process count.
    agent_memory_mb: int | None = Field(default=None, ge=64, le=1_048_576)
    agent_pids: int | None = Field(default=None, ge=16, le=1_000_000)
    # Per agent type: command = [...] (with {model}, {prompt_file}) and env = [names it may see].
    agents: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    # Values for the agents' variables; the environment is used for names not set here.
    secrets: dict[str, str] = Field(default_factory=dict)
    # Per repository path: setup, setup_timeout_seconds, ci, forge, base (as in .fleet.toml).
    repos: dict[str, dict[str, Any]] = Field(default_factory=dict)
    # Concurrent agents per tier (defaults: observer 0, participant 0, builder 1, architect 3,
    # sovereign 10) and for the whole fleet (unset: no fleet-wide cap).
    tier_limits: dict[Tier, Annotated[int, Field(ge=0, le=1000)]] = Field(default_factory=dict)
    global_cap: int | None = Field(default=25, ge=1, le=10_000)
    # The model router's table and breaker (see fleet_core.router.ModelRouter.from_config).
    routing: dict[str, Any] = Field(default_factory=dict)
    # How often a running engine looks for queued spawns it can admit.
    queue_poll_seconds: float = Field(default=2.0, gt=0, le=300)
    # The monitor: cycle interval, stall warning, retry backoff (min(base·2^n + jitter, max)).
    monitor_interval_seconds: float = Field(default=30.0, gt=0, le=3600)
    stall_minutes: float = Field(default=30.0, gt=0, le=1440)
    retry_base_seconds: float = Field(default=30.0, ge=0, le=3600)
    retry_max_seconds: float = Field(default=120.0, ge=0, le=86400)
    # Forges: how a PR is merged, and how long the local forge's CI command may run.
    merge_method: Literal["merge", "squash", "rebase"] = "merge"
    gh: str = Field(default="gh", min_length=1)  # the GitHub CLI: a name on PATH or a path
    ci_timeout_seconds: float = Field(default=600.0, gt=0, le=7200)
    key_encryption_key: SecretStr | None = None  # base64 of 32 bytes; unset: <data_dir>/keys
    # API tokens: the longest lifetime `fleet token issue --ttl` may give (at most 30 days),
    # and how long a server trusts what it read about a token (revoked? the operator's stored
    # tier?) before reading it again: a revocation or downgrade binds within that time.
    token_max_ttl_hours: float = Field(default=24.0, ge=1 / 60, le=720)
    auth_cache_seconds: float = Field(default=30.0, gt=0, le=60)

    @field_validator("database_url", "engine_database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value

    @field_validator("routing")
    @classmethod
    def _routing(cls, value: dict[str, Any]) -> dict[str, Any]:
        try:
            ModelRouter.from_config(value)
        except BadInputError as exc:
            raise ValueError(str(exc)) from None
        return value

    @field_validator("data_dir", "pg_bin", "pg_dir", "worktree_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().absolute()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_path())
        return (init_settings, env_settings, toml)

    @field_validator("agent_user")
    @classmethod
    def _not_db_user(cls, value: str) -> str:
        if value in ("root", "fleetpg"):
            raise ValueError("must be a user of its own (not root, not the database's user)")
        return value

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    def redacted(self) -> dict[str, Any]:
        """Every setting as JSON-able values, with passwords in URLs masked."""
        out: dict[str, Any] = {}
        for name, value in self.model_dump(mode="json").items():
            if name in SECRET_FIELDS and isinstance(value, str):
                value = _mask_password(value)
            if name in HIDDEN_FIELDS:
                value = {k: "***" for k in value}
            out[name] = value
        return out


def _mask_password(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    creds, at, host = rest.rpartition("@")
    if not at or ":" not in creds:
        return url
    user = creds.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings; any bad value raises ConfigError naming the field and where it came from."""
    path = config_path()
    try:
        if path.exists():
            with path.open("rb") as fh:
                tomllib.load(fh)
        return Settings(**overrides)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"] if p != "[key]") or "(settings)"
            env_name = ENV_PREFIX + str(err["loc"][0] if err["loc"] else "").upper()
            origin = f"from {env_name}" if env_name in os.environ else f"in {path}"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown setting"
            lines.append(f"config error: {field} ({origin}): {msg}")
        raise ConfigError("; ".join(lines)) from None
