"""What a spawn is asked (SpawnSpec), what it returns (AgentHandle), how an agent ended
(ExitStatus, read from the run directory's `exit` record), and the session names that tie an
agent to its task (`fleet-<task id>`, a tmux session or a container)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

from fleet_core.models import AgentType
from fleet_core.runtime.runfiles import write_atomic
from fleet_core.runtime.tmux import SESSION_PREFIX

DEFAULT_LOG_LINES = 100
MAX_LOG_LINES = 1000
START_TIMEOUT_S = 10.0
GATE_MARGIN_S = 60.0  # how long a launcher waits for `go` beyond the setup timeout
OOM_EXIT = 137


@dataclass(frozen=True)
class SpawnSpec:
    task_id: UUID
    operator_id: str
    repository: Path
    branch: str
    agent_type: AgentType
    model: str
    prompt: str
    base_branch: str | None = None
    attempt: int = 1
    setup: list[str] | None = None
    setup_timeout_s: float = 600.0
    sandbox: str | None = None  # how an earlier attempt ran: "bwrap" binds this one too
    quoted: tuple[str, ...] = ()  # lines the prompt quotes of earlier output: never its echo
    runtime: str = "local"  # "container": runtime/container.py runs it (see runtime/modes.py)


@dataclass(frozen=True)
class AgentHandle:
    task_id: UUID
    session: str
    worktree_path: Path
    branch: str
    host_id: str
    base_ref: str
    sandbox: str = "none"  # "bwrap" when the agent runs in the sandbox


@dataclass(frozen=True)
class ExitStatus:
    code: int
    signal: str | None
    ended_at: datetime | None
    error: str | None = None
    killed_by_fleet: bool = False

    @property
    def oom(self) -> bool:
        """137 = SIGKILL; unless fleet itself sent it, that is the OOM killer."""
        return self.code == OOM_EXIT and not self.killed_by_fleet


def read_exit(rd: Path) -> ExitStatus | None:
    """The launcher's (or kill's) exit record in the run directory `rd`; None while there is
    none. Both write it whole (temp file + rename), but a file that is cut short or garbled (a
    full disk, a crash of an older version) is read as not written yet rather than raising:
    the agent's own state then decides."""
    try:
        text = (rd / "exit").read_text()
    except (OSError, ValueError):
        return None
    if not text.endswith("\n"):
        return None  # every record ends with a newline: this one was cut short
    doc = dict(line.split("=", 1) for line in text.splitlines() if "=" in line)
    ended = doc.get("ended_at")
    try:
        return ExitStatus(
            code=int(doc["exit_code"]),
            signal=doc.get("signal") or None,
            ended_at=datetime.fromisoformat(ended) if ended else None,
            error=doc.get("error") or None,
            killed_by_fleet=doc.get("killed_by") == "fleet",
        )
    except (KeyError, ValueError):
        return None


def record_fleet_kill(rd: Path) -> None:
    """The exit record of an agent that fleet's SIGKILL ended (its launcher with it, so the
    launcher could not write it), written whole."""
    stamp = datetime.now(UTC).isoformat()
    write_atomic(
        rd / "exit", f"exit_code=137\nsignal=SIGKILL\nended_at={stamp}\nkilled_by=fleet\n".encode()
    )


def session_name(task_id: UUID) -> str:
    return f"{SESSION_PREFIX}{task_id}"


def task_of(session: str) -> UUID | None:
    """The task id of one of our session names; None for any other session."""
    if not session.startswith(SESSION_PREFIX):
        return None
    try:
        return UUID(session[len(SESSION_PREFIX) :])
    except ValueError:
        return None
