"""The launcher: the command of each agent's tmux pane.

    python -m fleet_core.runtime.launch RUN_DIR     (the runtime runs this file with -S)

RUN_DIR (0700) holds `spec` (SPEC_VERSION, gate timeout, cwd, task id, slirp4netns path or
"", seccomp filter path or "", the cgroup.procs files to join (newline-separated) or "",
argv), `env` (the agent's variables) and `prompt`, each 0600 and NUL-separated. A sandboxed argv
(bubblewrap's, see runtime/sandbox.py) holds the marker `{fleet-fds}` where the launcher puts
the options that pass descriptors: the seccomp filter, the prompt file (copied into the
sandbox's private /run), and --info-fd/--block-fd, with which it starts slirp4netns for the
sandbox's network namespace before the agent runs. The launcher stays outside the sandbox.
The env and prompt files are removed on every exit path.

The launcher starts while the runtime still creates the checkout and waits for the file `go`:
"1" starts the agent, anything else ends the launcher quietly, no `go` within the gate timeout
is recorded as exit 125. It then reads the env file and deletes it, starts the agent with the
prompt on stdin (the prompt file is unlinked as soon as it is open) or, for agents
that take a file, passes its path and deletes it when the agent ends. It records `started`
(agent pid) and `exit` (exit code, signal, end time; 137 marks an OOM kill) as key=value lines
for the runtime to read, forwards SIGTERM/SIGINT/SIGHUP to the agent, and exits with its code.

Once the exit is recorded and its last line printed, the launcher wakes the engine: one
datagram, `ended <task id>`, to the socket `wake.sock` in the run area (the run directories'
parent), where the engine's monitor listens (runtime/wake.py) and judges the task at once
rather than at its next cycle. Nothing waits on it and nothing fails when no engine listens:
the periodic cycle finds the exit record. The agent never reaches it from a sandbox (the run
area is not bound there); only the launcher, outside, sends.

Only os, signal, sys and time are imported, and the runtime starts it without `site`, so the
agent starts a few milliseconds after the pane.
"""

import os
import signal
import sys
import time

# What the agent inherits from the pane besides its own variables from the env file.
BASE_ENV = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TERM", "SHELL",
            "TMPDIR", "TZ", "COLORTERM")  # fmt: skip
PROMPT_FILE = "{prompt_file}"
SPEC_VERSION = "fleet-spec-2"  # the first field of `spec`: engine and launcher agree
FDS = "{fleet-fds}"  # in a sandbox command line: where the descriptors' options go
PROMPT_INSIDE = "/run/fleet/prompt"
OOM_EXIT = 137
WAKE_SOCKET = "wake.sock"  # in the run area: the engine listens, the launcher sends
SOCKET_PATH_MAX = 100  # sun_path holds 108 bytes: a longer path goes through /proc/self/fd
START_LINE = "fleet: starting "  # the launcher's first line of an attempt
END_LINES = (  # its last line, whichever way the attempt ended
    "fleet: agent exited with status ",
    "fleet: cannot start ",
    "fleet: the runtime never released ",
    "fleet: this launcher reads ",
)


def stamp(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}+00:00"


def wake(area: str, task_id: str) -> None:
    """Tell the engine listening in the run area that this task's agent ended. Best effort:
    no listener, a full queue, a stale socket all mean the next cycle finds the record."""
    dfd = -1
    try:
        import socket  # only now: the agent has ended, start-up time no longer counts

        path = os.path.join(area, WAKE_SOCKET)
        if len(path.encode()) > SOCKET_PATH_MAX:
            dfd = os.open(area, os.O_PATH | os.O_DIRECTORY)
            path = f"/proc/self/fd/{dfd}/{WAKE_SOCKET}"
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.sendto(f"ended {task_id}\n".encode(), path)
        finally:
            sock.close()
    except OSError:
        pass
    finally:
        if dfd >= 0:
            os.close(dfd)


def read_fields(path: str) -> list[str]:
    with open(path, "rb") as fh:
        data = fh.read()
    return [f.decode() for f in data.split(b"\0")] if data else []


def record(path: str, **fields: object) -> None:
    """key=value lines, written atomically (values never hold a newline)."""
    body = "".join(f"{k}={str(v).replace(chr(10), ' ')}\n" for k, v in fields.items())
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, body.encode())
    os.close(fd)
    os.replace(tmp, path)


def released(run_dir: str, timeout: float) -> bool | None:
    """Wait for `go`: True to start, False when told to abort, None on timeout."""
    go = os.path.join(run_dir, "go")
    start = time.monotonic()
    while not os.path.exists(go):
        waited = time.monotonic() - start
        if waited > timeout:
            return None
        # Usually released within milliseconds; a long setup is polled more slowly.
        time.sleep(0.001 if waited < 2 else 0.05)
    with open(go, "rb") as fh:
        return fh.read() == b"1"


def discard(*paths: str) -> None:
    for path in paths:
        try:  # noqa: SIM105 (contextlib would cost start-up time)
            os.unlink(path)
        except FileNotFoundError:
            pass


def read_info(fd: int) -> int:
    """bwrap's --info-fd JSON: the sandbox's first process, as the host sees it."""
    data = b""
    while b"}" not in data:
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    text = data.decode()
    key = text.find('"child-pid"')
    if key < 0:
        raise OSError("bubblewrap did not report its child")
    digits = "".join(c for c in text[text.index(":", key) + 1 :].split(",")[0] if c.isdigit())
    return int(digits)


def loopback_up(child: int, timeout: float = 5.0) -> None:
    """Wait for bubblewrap to finish setting up `lo` in the new namespace: slirp4netns
    configuring the namespace at the same moment makes bwrap fail ("loopback: Failed
    RTM_NEWADDR"), 16 times in 40 when measured here."""
    path = f"/proc/{child}/net/fib_trie"
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        try:
            with open(path) as fh:
                if "127.0.0.1" in fh.read():
                    return
        except OSError:
            raise OSError("the sandbox ended before its network was set up") from None
        time.sleep(0.002)
    raise OSError("the sandbox's loopback never came up")


def start_network(slirp: str, child: int) -> int:
    """slirp4netns for the sandbox's network namespace, the host's loopback disabled; returns
    its pid once the interface is up."""
    loopback_up(child)
    ready_r, ready_w = os.pipe()
    os.set_inheritable(ready_w, True)
    argv = [slirp, "--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox",
            "--enable-seccomp", "--ready-fd", str(ready_w), str(child), "tap0"]  # fmt: skip
    null = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0)]  # fmt: skip
    pid = os.posix_spawn(slirp, argv, {}, file_actions=null)
    os.close(ready_w)
    try:
        if os.read(ready_r, 1) != b"1":
            raise OSError("slirp4netns ended before the network was up")
    finally:
        os.close(ready_r)
    return pid


def command_name(argv: list[str]) -> str:
    """The agent's own command in a sandbox command line: after bwrap's `--` (and setpriv's)."""
    at = argv.index("--") + 1
    if os.path.basename(argv[at]) == "setpriv":
        at = argv.index("--", at) + 1
    return argv[at]


def main(run_dir: str) -> int:
    run_dir = os.path.abspath(run_dir)  # before any chdir
    area = os.path.dirname(run_dir)
    fields = read_fields(os.path.join(run_dir, "spec"))
    if not fields or fields[0] != SPEC_VERSION:  # written by another version of fleet
        print(f"fleet: this launcher reads {SPEC_VERSION}, the spec is another", flush=True)
        discard(os.path.join(run_dir, "env"), os.path.join(run_dir, "prompt"))
        record(os.path.join(run_dir, "exit"), exit_code=125, error="spec version mismatch",
               ended_at=stamp())  # fmt: skip
        wake(area, os.path.basename(run_dir))
        return 125
    gate, cwd, task_id, slirp, seccomp, cgroups, *argv = fields[1:]
    env_path = os.path.join(run_dir, "env")
    prompt_path = os.path.join(run_dir, "prompt")
    go = released(run_dir, float(gate))
    if go is None:
        discard(env_path, prompt_path)
        print(f"fleet: the runtime never released task {task_id}; giving up", flush=True)
        record(os.path.join(run_dir, "exit"), exit_code=125, error="never released",
               ended_at=stamp())  # fmt: skip
        wake(area, task_id)
        return 125
    if not go:
        discard(env_path, prompt_path)
        return 0
    extra = read_fields(env_path) if os.path.exists(env_path) else []
    discard(env_path)
    sandboxed = FDS in argv
    env = {} if sandboxed else {k: os.environ[k] for k in BASE_ENV if k in os.environ}
    env.update(item.split("=", 1) for item in extra if "=" in item)  # type: ignore[misc]

    prompt_fd = os.open(prompt_path, os.O_RDONLY) if os.path.exists(prompt_path) else -1
    on_stdin = PROMPT_FILE not in argv
    fds: list[str] = []
    keep: list[int] = []  # descriptors the sandbox inherits, closed once it runs
    if on_stdin and prompt_fd >= 0:
        discard(prompt_path)  # the open descriptor keeps the text for the agent alone
        actions = [(os.POSIX_SPAWN_DUP2, prompt_fd, 0)]
    elif sandboxed and prompt_fd >= 0:  # copied into the sandbox's private /run
        discard(prompt_path)
        os.set_inheritable(prompt_fd, True)
        fds += ["--perms", "0444", "--file", str(prompt_fd), PROMPT_INSIDE]
        argv = [a.replace(PROMPT_FILE, PROMPT_INSIDE) for a in argv]
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]  # type: ignore[list-item]
    else:
        argv = [a.replace(PROMPT_FILE, prompt_path) for a in argv]
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]  # type: ignore[list-item]
    if seccomp:
        sfd = os.open(seccomp, os.O_RDONLY)
        os.set_inheritable(sfd, True)
        keep.append(sfd)
        fds += ["--seccomp", str(sfd)]
    info_r = block_w = -1
    if slirp:
        info_r, info_w = os.pipe()
        block_r, block_w = os.pipe()
        for fd in (info_w, block_r):
            os.set_inheritable(fd, True)
            keep.append(fd)
        fds += ["--info-fd", str(info_w), "--block-fd", str(block_r)]
    if sandboxed:
        at = argv.index(FDS)
        argv = argv[:at] + fds + argv[at + 1 :]
    started = time.time()
    name = command_name(argv) if sandboxed else argv[0]
    print(f"fleet: starting {os.path.basename(name)} for task {task_id}"
          + (" (sandboxed)" if sandboxed else ""), flush=True)  # fmt: skip
    net_pid = pid = 0
    try:
        for procs in filter(None, cgroups.split("\n")):  # limits: the agent is born inside
            if not (procs.startswith("/sys/fs/cgroup/") and procs.endswith("/cgroup.procs")):
                raise OSError(f"not a cgroup: {procs}")
            with open(procs, "w") as fh:
                fh.write(str(os.getpid()))
        os.chdir(cwd)
        pid = os.posix_spawnp(argv[0], argv, env, file_actions=actions)
        for fd in keep:
            os.close(fd)
        keep = []
        # Started: the agent's process exists (in a sandbox, held until its network is up;
        # if that fails the exit record says so and the agent never runs).
        record(os.path.join(run_dir, "started"), pid=pid, started_at=stamp(started))
        if slirp:
            net_pid = start_network(slirp, read_info(info_r))
            os.write(block_w, b"1")
            os.close(block_w)
    except OSError as exc:
        if pid:  # the sandbox started, its network did not: it must not run without
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        print(f"fleet: cannot start {os.path.basename(name)}: {exc}", flush=True)
        record(os.path.join(run_dir, "exit"), exit_code=127, error=exc, ended_at=stamp())
        if not on_stdin:
            discard(prompt_path)
        wake(area, task_id)
        return 127
    finally:
        if prompt_fd >= 0:
            os.close(prompt_fd)
        for fd in keep:
            os.close(fd)
        if info_r >= 0:
            os.close(info_r)

    def forward(signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 (contextlib would cost start-up time)
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    _, status = os.waitpid(pid, 0)
    if net_pid:
        try:
            os.kill(net_pid, signal.SIGTERM)
            os.waitpid(net_pid, 0)
        except (ProcessLookupError, ChildProcessError):
            pass
    if not on_stdin:
        discard(prompt_path)
    sig_name = ""
    if os.WIFSIGNALED(status):
        sig_name = signal.Signals(os.WTERMSIG(status)).name
        code = 128 + os.WTERMSIG(status)
    else:
        code = os.WEXITSTATUS(status)
    record(os.path.join(run_dir, "exit"), exit_code=code, signal=sig_name,
           started_at=stamp(started), ended_at=stamp())  # fmt: skip
    suffix = f" ({sig_name})" if sig_name else ""
    print(f"fleet: agent exited with status {code}{suffix}", flush=True)
    wake(area, task_id)
    return code


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m fleet_core.runtime.launch RUN_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
