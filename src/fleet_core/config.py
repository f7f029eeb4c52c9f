"""Settings: `fleet.toml` in the platformdirs config dir, overridden by FLEET_* variables.

One pydantic model validates every value, whichever source it came from. The sources are read
here rather than by pydantic-settings (whose import alone cost more than asyncpg's, on every
CLI verb): keyword arguments win over `FLEET_<FIELD>` variables (names matched ignoring case;
dict-valued settings as JSON), which win over the TOML file; dicts are merged key by key."""

from __future__ import annotations

import getpass
import json
import os
import socket
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from fleet_core.errors import BadInputError, ConfigError
from fleet_core.models import OPERATOR_ID_RE, RuntimeMode, Tier
from fleet_core.runtime.container_config import ContainerSettings
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
    import platformdirs  # only when FLEET_CONFIG does not say

    return Path(platformdirs.user_config_dir(APP_NAME)) / "fleet.toml"


def _default_operator() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = f"uid{os.getuid()}"
    return name if OPERATOR_ID_RE.match(name) else "operator"


V = TypeVar("V")


def _checked(parse: Callable[[V], object], value: V) -> V:
    """`value` as a settings validator answers: unchanged when `parse` accepts it; its
    BadInputError (which names the bad field) as the ValueError pydantic reports."""
    try:
        parse(value)
    except BadInputError as exc:
        raise ValueError(str(exc)) from None
    return value


def _default_data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME))


class Settings(BaseModel):
    """Every setting. `Settings(**overrides)` reads the environment and the config file too;
    a bad value raises pydantic's ValidationError (`load_settings` turns it into one line)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    operator: str = Field(default_factory=_default_operator, pattern=OPERATOR_ID_RE.pattern)
    tier: Tier = Tier.SOVEREIGN
    database_url: str | None = None
    engine_database_url: str | None = None
    data_dir: Path = Field(default_factory=_default_data_dir)
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
    # Per agent type: command = [...] (with {model}, {prompt_file}), env = [names it may see],
    # idle_minutes = N (no progress for that long: the agent is stopped as idle; default 10).
    agents: dict[str, dict[str, Any]] = Field(default_factory=dict)
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
    # A GitHub PR with no check started after this long is `ci: no checks` (fleet_core.ci_start).
    ci_start_minutes: float = Field(default=10.0, gt=0, le=1440)
    retry_base_seconds: float = Field(default=30.0, ge=0, le=3600)
    retry_max_seconds: float = Field(default=120.0, ge=0, le=86400)
    # The background engine (DESIGN §10): a verb that creates or revives agents starts one when
    # no engine (console, `fleet --headless`, background engine) serves this host and data dir
    # (`engine_autostart`); it stops after `engine_idle_minutes` without live or pending tasks.
    engine_autostart: bool = True
    engine_idle_minutes: float = Field(default=30.0, gt=0, le=10_080)
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
    # Notifications (the outbox worker): attempts per channel before a delivery is
    # dead-lettered, the backoff (min(base·2^n, max), jittered; a Retry-After wins), how often
    # the worker polls besides LISTEN/NOTIFY, how long a claimed row stays with its engine,
    # and each HTTP call's timeout. `telegram_api_url`: the Bot API's base URL.
    notify_max_attempts: int = Field(default=8, ge=1, le=100)
    notify_retry_base_seconds: float = Field(default=2.0, gt=0, le=3600)
    notify_retry_max_seconds: float = Field(default=600.0, gt=0, le=86400)
    notify_poll_seconds: float = Field(default=5.0, gt=0, le=3600)
    notify_lease_seconds: float = Field(default=60.0, ge=1, le=3600)
    notify_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    notify_desktop: bool = True  # notify-send for the local operator, when it is installed
    telegram_api_url: str = Field(default="https://api.telegram.org", pattern=r"^https?://")
    # NATS JetStream (unset: no NATS): every event is published to fleet.<event> on `nats_stream`,
    # created if missing with these limits.
    nats_url: str | None = Field(default=None, pattern=r"^(nats|tls|ws|wss)://")
    nats_stream: str = Field(default="FLEET", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    nats_max_age_hours: float = Field(default=168.0, gt=0, le=87600)
    nats_max_bytes: int = Field(default=1 << 30, ge=1 << 20)
    # Reviews of a PR whose CI passed (fleet_core.review.settings): the reviewers, how many
    # approvals make it ready (unset: every reviewer that answered), the whole review's
    # timeout (then ready with a warning, or with strict_reviews a failure that is retried),
    # and how many reviewers run at once in the fleet.
    reviews: dict[str, Any] = Field(default_factory=dict)
    min_approvals: int | None = Field(default=None, ge=0, le=10)
    review_timeout_minutes: float = Field(default=30.0, gt=0, le=1440)
    strict_reviews: bool = False
    review_concurrency: int = Field(default=3, ge=1, le=100)
    # The Definition of Done per task type (fleet_core.review.dod): pr, synced, ci, reviews.
    dod: dict[str, Any] = Field(default_factory=dict)
    # `fleet gc`: what ended tasks leave is removed once older than this.
    gc_retention_days: float = Field(default=14.0, gt=0, le=3650)
    # Where agents run unless the spawn, the agent type ([agents.X] runtime) or the repository
    # (`runtime` in .fleet.toml / [repos."<path>"]) says: local (tmux) or container (Docker).
    runtime: RuntimeMode = "local"
    container: ContainerSettings = Field(default_factory=ContainerSettings)

    @field_validator("database_url", "engine_database_url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("must start with postgresql://")
        return value

    def __init__(self, **overrides: Any) -> None:
        super().__init__(**gather(overrides, config_path()))

    @field_validator("routing")
    @classmethod
    def _routing(cls, value: dict[str, Any]) -> dict[str, Any]:
        from fleet_core.router import ModelRouter  # only when a routing table is configured

        return _checked(ModelRouter.from_config, value)

    @field_validator("agents")
    @classmethod
    def _agents(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from fleet_core.runtime.adapters import build_adapters

        return _checked(build_adapters, value)

    @field_validator("reviews")
    @classmethod
    def _reviews(cls, value: dict[str, Any]) -> dict[str, Any]:
        from fleet_core.review.settings import ReviewSettings

        return _checked(ReviewSettings.parse, value)

    @field_validator("dod")
    @classmethod
    def _dod(cls, value: dict[str, Any]) -> dict[str, Any]:
        from fleet_core.review.dod import parse_dod

        return _checked(parse_dod, value)

    @field_validator("data_dir", "pg_bin", "pg_dir", "worktree_dir")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return None if value is None else value.expanduser().absolute()

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


def _json_fields() -> frozenset[str]:
    return frozenset(
        name
        for name, field in Settings.model_fields.items()
        if get_origin(field.annotation) in (dict, list) or field.annotation is ContainerSettings
    )


def read_toml(path: Path) -> dict[str, Any]:
    """The config file's table ({} when there is none); a syntax error names the file."""
    try:
        fh = path.open("rb")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None
    import tomllib  # only when there is a file

    try:
        with fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path}: {exc.strerror or exc}") from None


def read_env(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The settings given as FLEET_<FIELD> variables (any case); dict values are JSON."""
    environ = os.environ if environ is None else environ
    by_name = {k.upper(): v for k, v in environ.items() if k.upper().startswith(ENV_PREFIX)}
    json_fields = _json_fields()
    out: dict[str, Any] = {}
    for name in Settings.model_fields:
        env_name = ENV_PREFIX + name.upper()
        if env_name not in by_name:
            continue
        value: Any = by_name[env_name]
        if name in json_fields:
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise ConfigError(
                    f"config error: {name} (from {env_name}): not valid JSON ({exc})"
                ) from None
        out[name] = value
    return out


def _merge(low: Mapping[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(low)
    for key, value in high.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def gather(overrides: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """Keyword arguments over FLEET_* variables over the config file, merged key by key."""
    return _merge(_merge(read_toml(path), read_env()), overrides)


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
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        given = {name.upper() for name in os.environ}
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"] if p != "[key]") or "(settings)"
            env_name = ENV_PREFIX + str(err["loc"][0] if err["loc"] else "").upper()
            origin = f"from {env_name}" if env_name in given else f"in {path}"
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown setting"
            lines.append(f"config error: {field} ({origin}): {msg}")
        raise ConfigError("; ".join(lines)) from None
