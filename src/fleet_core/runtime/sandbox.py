"""The sandbox every local agent, `setup` and local `ci` command runs in: bubblewrap.

What the command sees (see shared/reference/sandbox.md for what was measured):
- the system read-only (`--ro-bind / /`), its own /dev, /proc, PID, IPC and UTS namespaces;
- a private, empty `/tmp`, `/var/tmp`, `/run`, `/home` and `/root` (tmpfs), and tmpfs over every
  directory of fleet's (data dir, cluster dir and socket, config dir): a read-only bind would
  not stop `connect()` on a Unix socket, an empty tmpfs does;
- writable: only its own checkout and its HOME (bound back on top of the tmpfs);
- its own network namespace: `slirp` (outbound only, through slirp4netns with the host's
  loopback disabled), `none` (only `lo`), or `host` (the explicit opt-out);
- never root: when fleet runs as root, bwrap starts (as root, so it can bind what only root
  can read) `setpriv`, which drops to the agent user with no capabilities and no_new_privs
  before the command runs; otherwise the command runs as fleet's own (unprivileged) user;
- a seccomp filter that refuses the TIOCSTI and TIOCLINUX ioctls (typing into the pane's
  terminal), which keeps the terminal usable, unlike `--new-session`.

The launcher (outside the sandbox) adds the parts that need file descriptors: `--seccomp`,
`--info-fd`/`--block-fd` for the network, `--file` for a prompt file.
"""

from __future__ import annotations

import os
import platform
import shutil
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from fleet_core.db.sysuser import RunAs, ensure_system_user, running_as_root
from fleet_core.errors import FleetError
from fleet_core.runtime.launch import FDS

AGENT_HOME = Path("/home/agent")
TMPFS_ALWAYS = ("/tmp", "/var/tmp", "/run", "/home", "/root")  # noqa: S108 (hidden, not used)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class SandboxMode(StrEnum):
    REQUIRED = "required"  # no agent starts unsandboxed
    AUTO = "auto"  # sandboxed when bubblewrap works here; else warn once and run unsandboxed
    OFF = "off"


class NetworkMode(StrEnum):
    SLIRP = "slirp"
    NONE = "none"
    HOST = "host"


class SandboxUnavailableError(FleetError):
    code = "sandbox_unavailable"


@dataclass(frozen=True)
class SandboxPolicy:
    """What config asks for (Settings.sandbox*)."""

    mode: SandboxMode = SandboxMode.AUTO
    network: NetworkMode = NetworkMode.SLIRP
    agent_user: str = "fleet-agent"


@dataclass(frozen=True)
class Sandbox:
    """A sandbox that works on this machine, with the paths it must hide."""

    bwrap: str
    setpriv: str | None  # set when fleet runs as root
    slirp4netns: str | None
    run_as: RunAs  # the agent user (root) or the current user
    network: NetworkMode
    hidden: tuple[Path, ...]

    @property
    def slirp_path(self) -> str | None:
        return self.slirp4netns if self.network is NetworkMode.SLIRP else None

    def wrap(
        self,
        argv: list[str],
        *,
        cwd: Path,
        writable: Iterable[Path],
        readable: Iterable[Path] = (),
        home: Path | None = None,
    ) -> list[str]:
        """The bwrap (and setpriv) command line that runs `argv` inside.

        Mounts stack in order, so the order is the policy: the always-private dirs; what is
        read-only visible (a tool's installation may contain a hidden dir: /root/.local holds
        root's data dir); then the hidden dirs, over whatever came before; then what lies
        inside a hidden dir but must be seen (the repository's objects under the data dir)
        and the writable checkout, over the hidden dirs."""
        out = [self.bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
        for private in TMPFS_ALWAYS:
            out += ["--tmpfs", private]
        readable = [*readable, *self.tool_paths(argv[0])]
        inside = [p for p in readable if any(p.is_relative_to(h) for h in self.hidden)]
        out += _binds("--ro-bind", [p for p in readable if p not in inside])
        for hidden in self.hidden:
            out += ["--tmpfs", str(hidden)]
        out += _binds("--ro-bind", inside)
        out += _binds("--bind", writable)
        if home is not None:
            out += ["--perms", "0755", "--dir", str(AGENT_HOME.parent)]
            out += ["--bind", str(home), str(AGENT_HOME)]
        out += ["--perms", "0755", "--dir", "/run/fleet", FDS]
        out += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        if self.network is not NetworkMode.HOST:
            out.append("--unshare-net")
        out += ["--chdir", str(cwd), "--"]
        if self.setpriv and self.run_as.uid is not None:
            out += [self.setpriv, f"--reuid={self.run_as.uid}", f"--regid={self.run_as.gid}",
                    "--clear-groups", "--no-new-privs", "--bounding-set=-all",
                    "--inh-caps=-all", "--"]  # fmt: skip
        return out + argv

    def tool_paths(self, command: str) -> list[Path]:
        """The installation a command lives in, when that is somewhere the sandbox hides
        (a venv or pyenv under /root, an nvm under /home): bound read-only, so the command
        can run. `/root/.pyenv/versions/3.11/bin/python` exposes `/root/.pyenv/versions/3.11`."""
        found = shutil.which(command)
        if found is None:
            return []
        hidden = [Path(h) for h in TMPFS_ALWAYS] + list(self.hidden)
        out = []
        for exe in {Path(found).absolute(), Path(found).resolve()}:
            if any(exe.is_relative_to(h) for h in hidden):
                out.append(exe.parent.parent)
        return sorted(set(out))

    def env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The base environment inside: nothing of the engine's own."""
        env = {
            "PATH": BASE_PATH,
            "HOME": str(AGENT_HOME),
            "USER": self.run_as.user or os.environ.get("USER", "agent"),
            "LANG": "C.UTF-8",
            "TERM": "xterm-256color",
            "GIT_PAGER": "cat",
            "TMPDIR": "/tmp",  # noqa: S108 (the sandbox's private tmpfs)
        }
        env["LOGNAME"] = env["USER"]
        env.update(extra or {})
        return env


def _binds(flag: str, paths: Iterable[Path]) -> list[str]:
    """Bind each path at itself, its parents made first (0755: bwrap makes them 0700)."""
    out = []
    for path in paths:
        for parent in reversed(path.parents[:-1]):
            out += ["--perms", "0755", "--dir", str(parent)]
        out += [flag, str(path), str(path)]
    return out


def resolve(policy: SandboxPolicy, hidden: Iterable[Path]) -> tuple[Sandbox | None, str | None]:
    """The sandbox for this machine, or (None, why not). `required` raises instead."""
    why = unavailable(policy)
    if why is not None:
        if policy.mode is SandboxMode.OFF:
            return None, why
        if policy.mode is SandboxMode.REQUIRED:
            raise SandboxUnavailableError(f"sandbox = required, but {why}")
        return None, why
    root = running_as_root()
    run_as = ensure_system_user(policy.agent_user) if root else RunAs()
    return Sandbox(
        bwrap=str(shutil.which("bwrap")),
        setpriv=shutil.which("setpriv") if root else None,
        slirp4netns=shutil.which("slirp4netns"),
        run_as=run_as,
        network=policy.network,
        hidden=tuple(sorted({p.resolve() for p in hidden if _is_real(p)})),
    ), None


def unavailable(policy: SandboxPolicy) -> str | None:
    """Why agents cannot run sandboxed with this policy here (None: they can); no side
    effects, so `fleet status` can ask."""
    if policy.mode is SandboxMode.OFF:
        return "sandbox = off in the configuration"
    if shutil.which("bwrap") is None:
        return "bubblewrap (`bwrap`) is not installed (Debian/Ubuntu/Fedora: package bubblewrap)"
    if running_as_root() and shutil.which("setpriv") is None:
        return "`setpriv` (util-linux) is needed to drop root for agents"
    if not running_as_root() and not Path("/proc/self/ns/user").exists():
        return "the kernel offers no user namespaces for bubblewrap"
    if policy.network is NetworkMode.SLIRP and shutil.which("slirp4netns") is None:
        return "slirp4netns is not installed (sandbox.network = slirp); or set it to none"
    if policy.network is NetworkMode.SLIRP and not running_as_root():
        return "sandbox.network = slirp needs root here (/dev/net/tun); set it to none or host"
    return None


def _is_real(path: Path) -> bool:
    return path.is_absolute() and path != Path("/") and path.exists()


# -- seccomp: refuse TIOCSTI / TIOCLINUX -------------------------------------------------------

TIOCSTI = 0x5412
TIOCLINUX = 0x541C
_IOCTL = {  # audit arch -> ioctl syscall numbers
    0xC000003E: (16, 0x40000000 | 514),  # x86_64 (and its x32 ABI)
    0x40000003: (54,),  # i386 on x86_64
    0xC00000B7: (29,),  # aarch64
    0x40000028: (54,),  # arm
}
_LD_ABS_W, _JEQ_K, _RET_K = 0x20, 0x15, 0x06
_ALLOW, _EPERM = 0x7FFF0000, 0x00050001


def tiocsti_filter() -> bytes:
    """A classic-BPF seccomp program (for `bwrap --seccomp FD`): ioctl(fd, TIOCSTI|TIOCLINUX)
    fails with EPERM, everything else is allowed. The request is compared on its low 32 bits,
    which is what the kernel uses."""
    checks = [(arch, nr) for arch, nrs in _IOCTL.items() for nr in nrs]
    # Layout: for each check i: [ld arch][jeq arch][ld nr][jeq nr] (4 each), then
    # ALLOW, CHECK: [ld arg1][jeq TIOCSTI][jeq TIOCLINUX], DENY.
    n = 4 * len(checks)
    allow = n
    check = n + 1
    deny = n + 5
    little = struct.pack("=H", 1) == b"\x01\x00"
    prog: list[tuple[int, int, int, int]] = []
    for i, (arch, nr) in enumerate(checks):
        here = 4 * i
        nxt = here + 4 if i + 1 < len(checks) else allow
        prog.append((_LD_ABS_W, 0, 0, 4))
        prog.append((_JEQ_K, 0, nxt - (here + 1) - 1, arch))
        prog.append((_LD_ABS_W, 0, 0, 0))
        prog.append((_JEQ_K, check - (here + 3) - 1, nxt - (here + 3) - 1, nr))
    prog.append((_RET_K, 0, 0, _ALLOW))  # allow
    prog.append((_LD_ABS_W, 0, 0, 24 if little else 28))  # args[1], its low 32 bits
    prog.append((_JEQ_K, deny - (check + 1) - 1, 0, TIOCSTI))
    prog.append((_JEQ_K, deny - (check + 2) - 1, 0, TIOCLINUX))
    prog.append((_RET_K, 0, 0, _ALLOW))
    prog.append((_RET_K, 0, 0, _EPERM))  # deny
    assert len(prog) == deny + 1
    order = "<" if little else ">"
    return b"".join(struct.pack(order + "HBBI", *ins) for ins in prog)


def seccomp_file(directory: Path) -> Path:
    """The compiled filter, written once per data dir (0644: bwrap reads it as root)."""
    path = directory / f"tiocsti-{platform.machine()}.bpf"
    program = tiocsti_filter()
    if not path.exists() or path.read_bytes() != program:
        directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(program)
        os.replace(tmp, path)
    return path
