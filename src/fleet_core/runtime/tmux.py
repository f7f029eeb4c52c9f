"""tmux on the program's own socket, through libtmux (synchronous: always via to_thread)."""

from __future__ import annotations

import asyncio
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path

import libtmux
from libtmux.exc import LibTmuxException

from fleet_core.errors import FleetError

SESSION_PREFIX = "fleet-"
HISTORY_LIMIT = 50_000


class TmuxError(FleetError):
    code = "tmux_error"


@dataclass(frozen=True)
class PaneState:
    dead: bool
    dead_status: int | None
    pid: int | None


class Tmux:
    """One tmux server per fleet data dir; sessions are targeted by exact name (`=name`)."""

    def __init__(self, socket_name: str, config_file: Path, history_limit: int = HISTORY_LIMIT):
        if shutil.which("tmux") is None:
            raise TmuxError("tmux is not installed (Debian/Ubuntu: apt install tmux)")
        self.socket_name = socket_name
        self.config_file = config_file
        self.history_limit = history_limit
        self._server = libtmux.Server(socket_name=socket_name, config_file=str(config_file))
        self._configured = False
        self._configure_lock = threading.Lock()

    def _cmd(self, *args: str) -> list[str]:
        result = self._server.cmd(*args)
        if result.returncode != 0:
            raise TmuxError(f"tmux {args[0]}: {' '.join(result.stderr).strip()}")
        return list(result.stdout)

    def _configure(self) -> None:
        with self._configure_lock:  # callers run in worker threads, possibly many at once
            if not self._configured:
                self._start_configured()

    def _start_configured(self) -> None:
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(
            "# written by fleet: agents' sessions on this private server\n"
            "set-option -g exit-empty off\n"
            "set-window-option -g remain-on-exit on\n"
            f"set-option -g history-limit {self.history_limit}\n"
        )
        self._cmd("start-server")
        # Also when the server was already running with an older file.
        self._cmd("set-option", "-g", "exit-empty", "off")
        self._cmd("set-window-option", "-g", "remain-on-exit", "on")
        self._cmd("set-option", "-g", "history-limit", str(self.history_limit))
        self._configured = True

    def _new_session(self, name: str, cwd: Path, argv: list[str], width: int, height: int) -> None:
        self._configure()
        self._cmd("new-session", "-d", "-s", name, "-c", str(cwd), "-x", str(width), "-y",
                  str(height), "--", *argv)  # fmt: skip

    async def new_session(
        self, name: str, cwd: Path, argv: list[str], width: int = 200, height: int = 50
    ) -> None:
        """Start `argv` (executed directly, no shell) as the only pane of a new session."""
        await asyncio.to_thread(self._new_session, name, cwd, argv, width, height)

    async def pipe_pane(self, name: str, command: str) -> None:
        """Pipe everything the pane prints from now on into `command` (a shell command)."""
        await asyncio.to_thread(self._cmd, "pipe-pane", "-t", f"={name}:", command)

    def _has(self, name: str) -> bool:
        return self._server.cmd("has-session", "-t", f"={name}").returncode == 0

    async def has_session(self, name: str) -> bool:
        return await asyncio.to_thread(self._has, name)

    def _pane(self, name: str) -> PaneState | None:
        # The status is empty while alive; a missing target prints empty fields, rc 0.
        result = self._server.cmd("display-message", "-p", "-t", f"={name}:", PANE_FORMAT)
        if result.returncode != 0 or not result.stdout:
            return None
        session, state = _pane_state(result.stdout[0])
        return state if session == name else None

    async def pane(self, name: str) -> PaneState | None:
        return await asyncio.to_thread(self._pane, name)

    def _panes(self) -> dict[str, PaneState]:
        try:
            result = self._server.cmd("list-panes", "-a", "-F", PANE_FORMAT)
        except LibTmuxException:
            return {}
        if result.returncode != 0:
            return {}  # no server: no sessions
        out: dict[str, PaneState] = {}
        for line in result.stdout:
            session, state = _pane_state(line)
            out.setdefault(session, state)
        return out

    async def panes(self) -> dict[str, PaneState]:
        """Every session's (first) pane on our socket, in one tmux call."""
        return await asyncio.to_thread(self._panes)

    def _capture(self, name: str, lines: int) -> str:
        if not self._has(name):  # capture-pane falls back to another pane on a bad target
            raise TmuxError(f"no tmux session {name}")
        result = self._server.cmd("capture-pane", "-p", "-J", "-t", f"={name}:", "-S", f"-{lines}")
        if result.returncode != 0:
            raise TmuxError(f"no session {name}")
        # remain-on-exit adds a "Pane is dead (status N, ...)" line below the blank screen.
        out = [line for line in result.stdout if not line.startswith("Pane is dead (")]
        while out and not out[-1].strip():
            out.pop()
        return "\n".join(out[-lines:])

    async def capture(self, name: str, lines: int) -> str:
        return await asyncio.to_thread(self._capture, name, lines)

    def _kill(self, name: str) -> bool:
        return self._server.cmd("kill-session", "-t", f"={name}").returncode == 0

    async def kill_session(self, name: str) -> bool:
        return await asyncio.to_thread(self._kill, name)

    def _list(self) -> list[str]:
        try:
            result = self._server.cmd("list-sessions", "-F", "#{session_name}")
        except LibTmuxException:
            return []
        return list(result.stdout) if result.returncode == 0 else []

    async def list_sessions(self) -> list[str]:
        return await asyncio.to_thread(self._list)

    def attach_command(self, name: str) -> list[str]:
        return ["tmux", "-L", self.socket_name, "attach-session", "-t", f"={name}"]

    def _kill_server(self) -> None:
        found = self._server.cmd("display-message", "-p", "#{socket_path}")
        self._server.cmd("kill-server")
        if found.returncode == 0 and found.stdout:  # tmux 3.3 leaves its socket file behind
            Path(found.stdout[0]).unlink(missing_ok=True)

    async def kill_server(self) -> None:
        await asyncio.to_thread(self._kill_server)


PANE_FORMAT = "#{session_name}|#{pane_dead}|#{pane_dead_status}|#{pane_pid}"


def _pane_state(line: str) -> tuple[str, PaneState]:
    """(session name, pane state) from one line printed with PANE_FORMAT."""
    session, dead, status, pid = [*line.split("|"), "", "", ""][:4]
    state = PaneState(
        dead=dead == "1",
        dead_status=int(status) if status.lstrip("-").isdigit() else None,
        pid=int(pid) if pid.isdigit() else None,
    )
    return session, state
