"""The launcher: the command of each agent's tmux pane.

    python -m fleet_core.runtime.launch RUN_DIR     (the runtime runs this file with -S)

RUN_DIR (0700) holds `spec` (gate timeout, cwd, task id, argv), `env` (the agent's variables)
and `prompt`, each 0600 and NUL-separated. The launcher starts while the runtime still creates
the worktree and waits for the file `go`: "1" starts the agent, anything else ends the
launcher quietly, no `go` within the gate timeout is recorded as exit 125. It then reads the
env file and deletes it, starts the agent
with the prompt on stdin (the prompt file is unlinked as soon as it is open) or, for agents
that take a file, passes its path and deletes it when the agent ends. It records `started`
(agent pid) and `exit` (exit code, signal, end time; 137 marks an OOM kill) as key=value lines
for the runtime to read, forwards SIGTERM/SIGINT/SIGHUP to the agent, and exits with its code.

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
OOM_EXIT = 137


def stamp(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}+00:00"


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


def main(run_dir: str) -> int:
    gate, cwd, task_id, *argv = read_fields(os.path.join(run_dir, "spec"))
    go = released(run_dir, float(gate))
    if go is None:
        print(f"fleet: the runtime never released task {task_id}; giving up", flush=True)
        record(os.path.join(run_dir, "exit"), exit_code=125, error="never released",
               ended_at=stamp())  # fmt: skip
        return 125
    if not go:
        return 0
    env_path = os.path.join(run_dir, "env")
    extra = read_fields(env_path) if os.path.exists(env_path) else []
    if os.path.exists(env_path):
        os.unlink(env_path)
    env = {k: os.environ[k] for k in BASE_ENV if k in os.environ}
    env.update(item.split("=", 1) for item in extra if "=" in item)  # type: ignore[misc]

    prompt_path = os.path.join(run_dir, "prompt")
    prompt_fd = os.open(prompt_path, os.O_RDONLY)
    on_stdin = PROMPT_FILE not in argv
    if on_stdin:
        os.unlink(prompt_path)  # the open descriptor keeps the text for the agent alone
        actions = [(os.POSIX_SPAWN_DUP2, prompt_fd, 0)]
    else:
        argv = [a.replace(PROMPT_FILE, prompt_path) for a in argv]
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)]  # type: ignore[list-item]
    started = time.time()
    print(f"fleet: starting {argv[0]} for task {task_id}", flush=True)
    try:
        os.chdir(cwd)
        pid = os.posix_spawnp(argv[0], argv, env, file_actions=actions)
    except OSError as exc:
        print(f"fleet: cannot start {argv[0]}: {exc}", flush=True)
        record(os.path.join(run_dir, "exit"), exit_code=127, error=exc, ended_at=stamp())
        if not on_stdin:
            os.unlink(prompt_path)
        return 127
    finally:
        os.close(prompt_fd)
    record(os.path.join(run_dir, "started"), pid=pid, started_at=stamp(started))

    def forward(signum: int, _frame: object) -> None:
        try:  # noqa: SIM105 (contextlib would cost start-up time)
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, forward)
    _, status = os.waitpid(pid, 0)
    if not on_stdin:
        os.unlink(prompt_path)
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
    return code


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print("usage: python -m fleet_core.runtime.launch RUN_DIR", file=sys.stderr)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
