#!/usr/bin/env python3
"""A fake agent CLI (claude, codex, gemini, aider: by the name it is called by) that
reproduces, byte for byte, what the real one printed and how it exited in a situation
measured with the real CLIs (tests/fixtures/clis/runs/, shared/reference/agent-clis.md).
The task's model names the situation:

  no-login       claude, not logged in: the stream-json answer, exit 1
  no-network     claude: silent, then "API Error: Unable to connect to API", exit 1
                 codex: reconnect lines, then "Reconnecting... waiting for network" every
                 second, forever
  no-key         gemini: "Please set an Auth method ...", exit 41; aider: the
                 litellm.AuthenticationError, then exit 0
  silent         claude: prints its start, then nothing, forever (a hang without noise)
  busy           codex: a JSON agent message every 0.3 s for 3 s, then exit 3
  anything else  gemini without --skip-trust: the untrusted-folder refusal, exit 55
"""

import os
import sys
import time

RUNS = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "fixtures", "clis", "runs")


def run(name: str) -> bytes:
    with open(os.path.join(RUNS, name), "rb") as fh:
        return fh.read()


def out(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def option(argv: list, *names: str) -> str:
    for i, arg in enumerate(argv[:-1]):
        if arg in names:
            return argv[i + 1]
    return ""


def main() -> int:
    cli = os.path.basename(sys.argv[0])
    argv = sys.argv[1:]
    if cli == "codex" and argv[:1] == ["login"]:  # `fleet agent login codex`
        os.makedirs(os.path.join(os.environ["HOME"], ".codex"), exist_ok=True)
        with open(os.path.join(os.environ["HOME"], ".codex", "auth.json"), "w") as fh:
            fh.write(sys.stdin.readline())
        out(f"logged in as {os.getuid()}, HOME {os.environ['HOME']}\n".encode())
        return 0
    model = option(argv, "--model", "-m")
    prompt = "" if cli in ("aider",) else sys.stdin.read()
    if cli == "claude" and model == "no-login":
        out(run("claude-not-logged-in.out"))
        return 1
    if cli == "claude" and model == "no-network":
        time.sleep(0.5)
        out(b"API Error: Unable to connect to API (ConnectionRefused)\n")
        return 1
    if cli == "claude" and model == "silent":
        out(b'{"type":"system","subtype":"init","model":"silent"}\n')
        while True:
            time.sleep(60)
    if cli == "codex" and model == "busy":
        for i in range(10):
            time.sleep(0.3)
            out(
                b'{"type":"item.completed","item":{"id":"item_%d","type":"agent_message",'
                b'"text":"step %d"}}\n' % (i, i)
            )
        return 3
    if cli == "codex" and model == "no-network":
        if "--json" in argv:
            out(run("codex-no-network.out"))
        else:  # the plain mode echoes the whole prompt first
            head = run("codex-no-network-plain.out").split(b"user\n", 1)[0]
            out(head + b"user\n" + prompt.encode() + b"\n")
        while True:
            time.sleep(1)
            if "--json" in argv:
                out(
                    b'{"type":"error","message":"Reconnecting... waiting for network '
                    b'(Connection failed: error sending request)"}\n'
                )
            else:
                out(b"ERROR: Reconnecting... waiting for network\n")
    if cli == "gemini" and "--skip-trust" not in argv:
        out(run("gemini-untrusted.out"))
        return 55
    if cli == "gemini" and model == "no-key":
        out(run("gemini-no-auth.out"))
        return 41
    if cli == "aider" and model == "no-key":
        out(run("aider-no-key.out"))
        return 0
    out(f"{cli}: fake, nothing to do for model {model}\n".encode())
    return 3


if __name__ == "__main__":
    sys.exit(main())
