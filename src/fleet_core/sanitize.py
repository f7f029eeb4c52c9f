"""Redact secrets and host paths from text shown to an agent (error output, logs, diffs).

Secret values are replaced by `REDACTED` while the key name stays (`API_KEY=[REDACTED]`), so
the text remains useful. Choices on the ambiguous rules:

- Any `UPPER_CASE=value` assignment (an `env` dump or a .env file) is redacted, whatever the
  name: `HOME=/home/alice` leaks as much as a token does.
- A key counts as sensitive when it contains key, token, secret, password, passwd, credential,
  auth (not author) or private. Left alone: exception names (`KeyError: 'x'`) and file
  locations or ports (`test_auth.py:42:`, `auth-db:5432`). `--password value` flags count too.
- `Bearer`/`Basic`/`Token` followed by a plain word ("Basic usage") is not a credential.
- Long random-looking strings: 32+ hex characters are redacted (so are 40-char commit SHAs).
  A run of 40+ base64/base64url characters is redacted only when it mixes upper case, lower
  case and digits and its words (`Proxy`, `HTTP`, `42`, split also at `/_-+`) average under
  four characters: random keys average about two, while paths and identifiers
  (`tests/integration/TestModuleV2/...`, `AbstractSingletonProxyFactoryBean`) survive.
- Absolute paths outside the worktree become `[PATH]/<basename>` (the file name helps with
  tracebacks and reveals nothing about the host); paths inside it become relative
  (`.` for the worktree itself). `~/...`, relative paths and URLs are kept.

- An HTTP request path (`GET /api/v1/x`) cannot be told from a host path: `[PATH]/x`.
- Every PEM block is redacted (a private key as `[REDACTED PRIVATE KEY]`, a certificate or
  any other as `[REDACTED PEM BLOCK]`); one cut off before its END line, to the end of the text.
- Token shapes redacted wherever they appear: AWS key ids, GitHub, OpenAI/Anthropic (`sk-`),
  Slack (`xox?-`, `xoxe-`, `xapp-`), GitLab, Docker Hub, Google API keys (`AIza` + 35),
  Hugging Face (`hf_`) and JWTs.

The output is a fixed point: `sanitize(sanitize(x)) == sanitize(x)`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

REDACTED = "[REDACTED]"
REDACTED_PRIVATE_KEY = "[REDACTED PRIVATE KEY]"
REDACTED_PEM = "[REDACTED PEM BLOCK]"  # a certificate, public key or other armored block
PATH_MARKER = "[PATH]"

# Any PEM block (keys, certificates, PGP armor): from BEGIN to the END of the same label.
_PEM = re.compile(r"-----BEGIN ([A-Z0-9][A-Z0-9 ._-]*)-----.*?(?:-----END \1-----|\Z)", re.DOTALL)
_URL_USERINFO = re.compile(r"(\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s:/@'\"]+:)[^\s@/'\"]+(?=@)")
_TOKEN_SHAPES = re.compile(
    r"\b(?:"
    r"(?:AKIA|ASIA)[0-9A-Z]{16}"
    r"|gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|sk-(?=[A-Za-z0-9_-]*[0-9])[A-Za-z0-9_-]{20,}"
    r"|xox[abpors]-[A-Za-z0-9-]{10,}|xoxe(?:\.xox[bp])?-[A-Za-z0-9-]{10,}"  # Slack
    r"|xapp-[0-9]+-[A-Za-z0-9-]{10,}"  # Slack app-level tokens
    r"|AIza[0-9A-Za-z_-]{35}"  # Google API keys
    r"|hf_[A-Za-z0-9]{30,}"  # Hugging Face
    r"|glpat-[A-Za-z0-9_-]{20,}|dckr_pat_[A-Za-z0-9_-]{20,}"
    r"|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
    r")"
)
# An HTTP credential after its scheme, anywhere (`curl -H "Authorization: Bearer ..."`).
_SCHEME_CREDENTIAL = re.compile(r"\b(Bearer|Basic|Token)([ \t]+)([A-Za-z0-9._~+/-]+=*)")
# `--password hunter2` (the `=` form is a key=value pair below).
_SECRET_FLAG = re.compile(
    r"(?<![\w-])(--?[\w-]*(?:password|passwd|token|secret|key|auth(?!or)|credential)[\w-]*[ \t]+)"
    r"(?![-\[])[^\s'\"]+",
    re.IGNORECASE,
)
_ASSIGNMENT = re.compile(
    r"(?<![\w$.-])((?:export[ \t]+)?[A-Z][A-Z0-9_]+=)(?!=)(\"[^\"\n]*\"|'[^'\n]*'|[^\s'\"]+)"
)
_KEY_VALUE = re.compile(
    r"(?<![\w.-])([\"']?)"
    r"([\w.-]*(?:key|token|secret|passw(?:or)?d|credential|auth(?!or(?!i[sz]))|private)[\w.-]*)\1"
    r"([ \t]*[:=][ \t]*(?:(?:Bearer|Basic|Token)[ \t]+)?)(?![=:\s])"
    r"(\"[^\"\n]*\"|'[^'\n]*'|[^\s'\",;&})]+)",
    re.IGNORECASE,
)
_LOCATION = re.compile(r":\d+(?::\d+)*:?")  # `auth.py:12:` is a file and line, `host:8080` a port
_HEX = re.compile(r"\b[0-9a-fA-F]{32,}\b")
_BASE64 = re.compile(r"(?<![\w+/=-])[A-Za-z0-9+/_-]{40,}={0,2}(?![\w+/=-])")
# Words of an identifier: `Proxy`, `HTTP`, `2`; random text has them about two characters long.
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+")
_ABSOLUTE_PATH = re.compile(r"(?<![\w.:/~$\]\[-])/[\w.@%+~-]+(?:/[\w.@%+~-]+)*/?")
_MARKERS = (REDACTED, PATH_MARKER)
# A replacement can expose a new match (a token glued to a value just redacted), so the rules
# run again until nothing changes; real text settles after one or two passes.
_MAX_PASSES = 5


def _pem(m: re.Match[str]) -> str:
    return REDACTED_PRIVATE_KEY if "PRIVATE KEY" in m[1] else REDACTED_PEM


def _keep_quotes(value: str) -> str:
    """REDACTED, inside the value's quotes if it had them."""
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return f"{value[0]}{REDACTED}{value[0]}"
    return REDACTED


def _scheme_credential(m: re.Match[str]) -> str:
    token = m[3]
    # "Basic usage", "Token limits": plain words are not credentials.
    if len(token) < 8 or (token.isalpha() and token[1:].islower()):
        return m[0]
    return f"{m[1]}{m[2]}{REDACTED}"


def _assignment(m: re.Match[str]) -> str:
    return m[1] + _keep_quotes(m[2])


def _key_value(m: re.Match[str]) -> str:
    quote, key, separator, value = m[1], m[2], m[3], m[4]
    if (
        key.endswith(("Error", "Exception", "Warning"))
        or value.strip("\"'") in _MARKERS
        or _LOCATION.fullmatch(separator + value)
    ):
        return m[0]
    return f"{quote}{key}{quote}{separator}{_keep_quotes(value)}"


def _base64(m: re.Match[str]) -> str:
    run = m[0]
    if not (re.search("[A-Z]", run) and re.search("[a-z]", run) and re.search("[0-9]", run)):
        return run
    words = _WORD.findall(run)
    return REDACTED if sum(map(len, words)) < 4 * len(words) else run


def _path_rule(worktree: str | Path | None) -> Callable[[re.Match[str]], str]:
    root = os.path.normpath(str(worktree)) if worktree is not None else None

    def replace(m: re.Match[str]) -> str:
        path = m[0].rstrip(".")  # a sentence's full stop is not part of the path
        tail = m[0][len(path) :]
        if root is not None and (path.rstrip("/") == root or path.startswith(root + "/")):
            return (path[len(root) + 1 :] or ".") + tail
        basename = path.rstrip("/").rsplit("/", 1)[-1]
        return f"{PATH_MARKER}/{basename}{tail}"

    return replace


def sanitize(text: str, *, worktree: str | Path | None = None) -> str:
    """`text` without secret values and host paths; paths inside `worktree` made relative."""
    paths = _path_rule(worktree)
    for _ in range(_MAX_PASSES):
        clean = _sanitize_once(text, paths)
        if clean == text:
            break
        text = clean
    return text


def _sanitize_once(text: str, paths: Callable[[re.Match[str]], str]) -> str:
    text = _PEM.sub(_pem, text)
    text = _URL_USERINFO.sub(lambda m: m[1] + REDACTED, text)
    text = _TOKEN_SHAPES.sub(REDACTED, text)
    text = _SCHEME_CREDENTIAL.sub(_scheme_credential, text)
    text = _SECRET_FLAG.sub(lambda m: m[1] + REDACTED, text)
    text = _ASSIGNMENT.sub(_assignment, text)
    text = _KEY_VALUE.sub(_key_value, text)
    text = _HEX.sub(REDACTED, text)
    text = _BASE64.sub(_base64, text)
    return _ABSOLUTE_PATH.sub(paths, text)
