"""What an agent echoes of its prompt: recognised by hashes of the prompt's lines (its text is
never kept), and cut from the failure context's log tail and so from the retry prompt."""

from __future__ import annotations

import hashlib

ECHO_MIN_CHARS = 12  # a line this long that repeats the prompt's is its echo
ECHO_NEAR = 6  # a shorter one (a heading) counts when that close to a long one


def echo_key(line: str) -> str | None:
    """A line's key for recognising the prompt's echo (None for a blank line)."""
    text = " ".join(line.split())
    if not text:
        return None
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def prompt_hashes(prompt: str, quoted: tuple[str, ...] | list[str] = ()) -> bytes:
    """The keys of the prompt's lines, except those it quotes of the agent's earlier output
    (a retry's log tail): the agent printing them again is output, not echo."""
    keys = {k for line in prompt.splitlines() if (k := echo_key(line))}
    keys -= {k for line in quoted if (k := echo_key(line))}
    return "\n".join(sorted(keys)).encode()


def strip_echo(text: str, keys: frozenset[str]) -> str:
    """`text` without the lines that repeat the prompt's: long ones wherever they are, short
    ones (headings, file names) only beside long ones."""
    if not keys:
        return text
    lines = text.splitlines()
    hit = [not ln.startswith("fleet: ") and echo_key(ln) in keys for ln in lines]
    long_hits = [i for i, ln in enumerate(lines) if hit[i] and len(ln.strip()) >= ECHO_MIN_CHARS]
    drop = set(long_hits)
    for i, is_hit in enumerate(hit):
        if is_hit and any(abs(i - j) <= ECHO_NEAR for j in long_hits):
            drop.add(i)
    return "\n".join(ln for i, ln in enumerate(lines) if i not in drop)
