"""Commands fleet runs on an agent's behalf (a repository's `setup`, the local forge's `ci`):
in the same sandbox as agents, through the same launcher, with the base environment only.

Never the engine's environment: CI runs agent-written code from the PR head, and the engine's
variables hold the database URL, the key-encryption key and forge tokens."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from fleet_core.runtime import launch
from fleet_core.runtime.proc import CommandError, Result, run
from fleet_core.runtime.runfiles import write_fields, write_private
from fleet_core.runtime.sandbox import BASE_PATH, Sandbox, seccomp_file


def base_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """What an unsandboxed command gets: a PATH and a locale, nothing of the engine's."""
    env = {"PATH": os.environ.get("PATH", BASE_PATH), "LANG": "C.UTF-8", "GIT_PAGER": "cat"}
    for name in ("HOME", "USER", "LOGNAME", "TZ"):
        if name in os.environ:
            env[name] = os.environ[name]
    env.update(extra or {})
    return env


class Confinement:
    """The sandbox (or none) with what running in it needs: a directory for run files and
    the seccomp filter. One per engine, shared by the runtime and the local forge's CI."""

    def __init__(self, sandbox: Sandbox | None, data_dir: Path) -> None:
        self.sandbox = sandbox
        self.run_root = data_dir / "run"
        self.seccomp = seccomp_file(data_dir / "sandbox") if sandbox else None

    def give(self, path: Path) -> None:
        """Hand a directory tree fleet made to the agent user (when fleet runs as root)."""
        owner = self.sandbox.run_as if self.sandbox else None
        if owner is not None and owner.uid is not None:
            chown_tree(path, owner.uid, owner.gid or 0)

    async def run(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        writable: Sequence[Path],
        readable: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        timeout: float,
    ) -> Result:
        """Run `argv` like an agent (sandboxed when there is a sandbox); its output and exit
        code, CommandError when it fails or times out."""
        sandbox = self.sandbox
        if sandbox is None:
            return await run(argv, cwd=cwd, env=base_env(env), timeout=timeout)
        self.run_root.mkdir(parents=True, exist_ok=True, mode=0o700)
        rd = Path(tempfile.mkdtemp(prefix="cmd-", dir=self.run_root))
        try:
            wrapped = sandbox.wrap(list(argv), cwd=cwd, writable=writable, readable=readable)
            fields = [launch.SPEC_VERSION, "0", "/", "command", sandbox.slirp_path or "",
                      str(self.seccomp or ""), "", *wrapped]  # fmt: skip
            write_fields(rd / "spec", fields)
            write_fields(rd / "env", [f"{k}={v}" for k, v in sandbox.env(dict(env or {})).items()])
            write_private(rd / "go", b"1")
            launcher = [sys.executable, "-S", launch.__file__, str(rd)]
            result = await run(launcher, cwd=rd, env=base_env(), timeout=timeout, check=False)
            lines = [ln for ln in result.stdout.splitlines(keepends=True)
                     if not ln.startswith("fleet: ")]  # fmt: skip
            out = Result(result.returncode, "".join(lines), result.stderr)
            if out.returncode != 0:
                raise CommandError(list(argv), out.returncode, out.stderr + out.stdout)
            return out
        finally:
            await asyncio.to_thread(shutil.rmtree, rd, True)


def chown_tree(top: Path, uid: int, gid: int) -> None:
    os.lchown(top, uid, gid)
    for root, dirs, files in os.walk(top):
        for name in dirs + files:
            os.lchown(os.path.join(root, name), uid, gid)
