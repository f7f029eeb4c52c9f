#!/usr/bin/env python3
"""A fake agent CLI (claude, codex, gemini, aider: by the name it is called by) that
reproduces, byte for byte, what the real one printed and how it exited in a situation
measured with the real CLIs (tests/fixtures/clis/runs/, shared/reference/agent-clis.md).
The task's model names the situation:

  no-login       claude, not logged in: the stream-json answer, exit 1
  no-network     claude: silent, then "API Error: Unable to connect to API", exit 1
  no-dns         claude 2.1.332 in a container without DNS: ten api_retry lines, then "API
                 Error: Can't reach the API server ... (ENOTFOUND)" as its result, exit 1
                 codex: reconnect lines, then "Reconnecting... waiting for network" every
                 second, forever
  no-key         gemini: "Please set an Auth method ...", exit 41; aider: the
                 litellm.AuthenticationError, then exit 0
  silent         claude: prints its start, then nothing, forever (a hang without noise)
  busy           codex: a JSON agent message every 0.3 s for 3 s, then exit 3
  anything else  gemini without --skip-trust: the untrusted-folder refusal, exit 55

As a reviewer (claude with --json-schema, codex exec with --output-schema, gemini -o json) it
answers in that CLI's JSON shape; the model names the verdict: approve, request_changes,
comment; `garbage` (not JSON), `hang` (never answers), `fail` (an error result, exit 1),
`reject-logic-once` (the logic reviewer requests changes once, then approves: a file in
HOME remembers). Its summary says whether its working directory could be written to.
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


def reviewing(cli: str, argv: list) -> bool:
    if cli == "claude":
        return "--json-schema" in argv
    if cli == "codex":
        return "--output-schema" in argv
    return cli == "gemini" and option(argv, "-o", "--output-format") == "json"


def review(cli: str, argv: list, model: str) -> int:
    import json

    prompt = sys.stdin.read()
    focus = prompt.split("## Your focus\n", 1)[-1].split(":", 1)[0]
    try:
        with open("fleet-review-probe", "w") as fh:
            fh.write("x")
        writable = True
    except OSError:
        writable = False
    verdict = model
    if model == "reject-logic-once":
        marker = os.path.join(os.environ["HOME"], ".fake-rejected-once")
        verdict = "approve"
        if focus == "logic" and not os.path.exists(marker):
            open(marker, "w").close()
            verdict = "request_changes"
    if verdict == "hang":
        while True:
            time.sleep(60)
    comments = (
        []
        if verdict == "approve"
        else [{"path": "calc.py", "line": 4, "body": f"{cli} {focus}: handle b == 0"}]
    )
    answer = {
        "verdict": verdict,
        "summary": f"{focus} by {cli}; cwd writable: {writable}",
        "comments": comments,
    }
    text = "Sure! Here is my review." if verdict == "garbage" else json.dumps(answer)
    if cli == "claude":
        doc = {
            "type": "result",
            "subtype": "success",
            "is_error": verdict == "fail",
            "duration_ms": 1200,
            "num_turns": 1,
            "result": text,
            "session_id": "fake",
            "total_cost_usd": 0.0125,
            "usage": {"input_tokens": 900, "output_tokens": 80},
        }
        if verdict not in ("garbage", "fail"):
            doc["structured_output"] = answer
        out((json.dumps(doc) + "\n").encode())
        return 1 if verdict == "fail" else 0
    if cli == "codex":
        if verdict == "fail":
            out(b"ERROR: stream disconnected before completion\n")
            return 1
        out(b"[2026-11-29T10:00:00] OpenAI Codex v0.171.0 (research preview)\n")
        with open(option(argv, "-o", "--output-last-message"), "w") as fh:
            fh.write(text)
        out(b"[2026-11-29T10:00:05] tokens used: 980\n")
        return 0
    if verdict == "fail":
        out(
            json.dumps(
                {"error": {"type": "FatalAuthenticationError", "message": "no auth", "code": 41}}
            ).encode()
        )
        return 41
    out(json.dumps({"response": text, "stats": {"models": {}}}).encode())
    return 0


def main() -> int:
    cli = os.path.basename(sys.argv[0])
    argv = sys.argv[1:]
    if reviewing(cli, argv):
        return review(cli, argv, option(argv, "--model", "-m"))
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
    if cli == "claude" and model == "no-dns":
        for line in run("claude-no-dns.out").splitlines(keepends=True):
            out(line)
            time.sleep(0.05)  # the real one waited 3 minutes between its retries
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
