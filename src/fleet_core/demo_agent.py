"""The demo agent: a real program that does what a coding agent does, offline.

    python -m fleet_core.demo_agent      (prompt on stdin, run inside the task's worktree)

It reads the prompt, writes `fleet-demo/<task>.md` (the prompt, byte for byte) and commits,
printing progress; the engine pushes the branch (agents need no push credentials). Markers in
the prompt change what it does: `[demo:fail]` exits 1, `[demo:hang]` never ends (silent, no
commit),
`[demo:stall]` stays alive printing but never commits, `[demo:oom]` exits 137,
`[demo:ci-fail-once]` also writes `fleet-demo/CI_FAIL` on the first attempt (FLEET_ATTEMPT=1)
and removes it on later ones, so a CI command that checks for that file fails once. A review
task (its prompt asks for the "fleet review report") commits nothing and ends its output with
an approving report's JSON (`[demo:no-report]`: it commits as other tasks do, no report).
FLEET_DEMO_DELAY (seconds, default 0.3) paces the steps so the log pane has something to show.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

GIT_ID = ["-c", "user.name=fleet demo agent", "-c", "user.email=demo-agent@fleet.invalid"]


def say(text: str) -> None:
    print(f"[demo] {text}", flush=True)


def git(*args: str, stdin: str | None = None) -> None:
    subprocess.run(["git", *GIT_ID, *args], input=stdin, text=True, check=True, timeout=120)


def main() -> int:
    prompt = sys.stdin.buffer.read()
    text = prompt.decode("utf-8", errors="replace")
    delay = float(os.environ.get("FLEET_DEMO_DELAY", "0.3"))
    task = os.environ.get("FLEET_TASK_ID", "task")
    attempt = int(os.environ.get("FLEET_ATTEMPT", "1"))
    say(f"read prompt: {len(prompt)} bytes, sha256 {hashlib.sha256(prompt).hexdigest()}")
    time.sleep(delay)
    if "[demo:oom]" in text:
        say("allocating far too much memory ... killed")
        return 137
    if "[demo:fail]" in text:
        say("giving up: the task is impossible")
        return 1
    if "[demo:hang]" in text:
        say("waiting forever")
        while True:
            time.sleep(3600)
    if "[demo:stall]" in text:
        while True:  # alive, never commits
            say("thinking ...")
            time.sleep(max(delay, 1.0))
    if "fleet review report" in text and "[demo:no-report]" not in text:  # a review task
        say("read the changes: nothing to change")
        report = {"verdict": "approve", "summary": "demo review: nothing to change",
                  "comments": []}  # fmt: skip
        print(json.dumps(report, indent=2), flush=True)
        return 0
    out = Path("fleet-demo")
    out.mkdir(exist_ok=True)
    (out / f"{task}.md").write_bytes(prompt)
    say(f"wrote {out / (task + '.md')}")
    marker = out / "CI_FAIL"
    if "[demo:ci-fail-once]" in text and attempt == 1:
        marker.write_text("this change breaks the tests until the retry\n")
        say("wrote a change that breaks the tests")
    elif marker.exists():
        marker.unlink()
        say("fixed the broken tests")
    time.sleep(delay)
    git("add", "-A")
    lines = [line.strip() for line in text.splitlines()]
    title = next((line for line in lines if line and not line.startswith("#")), task)
    # The message comes from the prompt: on stdin, never in argv (where `ps` would show it).
    git("commit", "-q", "-F", "-", stdin=f"demo: {title[:60]}\n")
    say("committed")
    time.sleep(delay)
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
