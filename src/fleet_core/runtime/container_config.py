"""Container mode's settings (`[container]` in fleet.toml): the daemon, the images, the limits
and the network every agent container gets."""

from __future__ import annotations

import os
import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

USER_RE = re.compile(r"^[1-9][0-9]{0,9}:[0-9]{1,10}$")


class ContainerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # The Docker daemon: unset uses DOCKER_HOST, else the default socket. unix:// or tcp://.
    docker_host: str | None = Field(default=None, pattern=r"^(unix|tcp|http|https)://\S+$")
    # Per agent type, the image to run (default fleet-agent-<type>:latest, `fleet image build`).
    images: dict[str, str] = Field(default_factory=dict)
    memory_mb: int = Field(default=2048, ge=16, le=1_048_576)
    cpus: float = Field(default=2.0, gt=0, le=1024)
    pids: int = Field(default=512, ge=16, le=1_000_000)
    tmp_mb: int = Field(default=256, ge=1, le=65_536)
    network: Literal["bridge", "none"] = "bridge"
    # The uid:gid agents run as when fleet runs as root without an agent user (never 0).
    user: str = Field(default="1000:1000", pattern=USER_RE.pattern)
    stop_grace_seconds: float | None = Field(default=None, ge=0, le=300)

    @field_validator("images")
    @classmethod
    def _images(cls, value: dict[str, str]) -> dict[str, str]:
        from fleet_core.models import AgentType

        for agent, image in value.items():
            try:
                AgentType(agent)
            except ValueError:
                raise ValueError(f"images.{agent}: unknown agent type") from None
            if not image or any(c.isspace() for c in image):
                raise ValueError(f"images.{agent}: not an image name")
        return value

    @property
    def nano_cpus(self) -> int:
        """CPUs as the Engine API's NanoCpus, at most the host's (more is a 400)."""
        return int(min(self.cpus, float(os.cpu_count() or 1)) * 1e9)
