"""sanitize: secret values and host paths leave the text, useful text stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleet_core.sanitize import (
    PATH_MARKER,
    REDACTED,
    REDACTED_PEM,
    REDACTED_PRIVATE_KEY,
    sanitize,
)

WORKTREE = "/data/worktrees/T42"

GITHUB_TOKEN = "ghp_Zx8Kq2LmN4pR6sT8vW0yA1bC3dE5fG7hJ9kL"
BEARER = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJjaS1ib3QifQ.Qm9ndXNTaWduYXR1cmVfMTIz"
DOCKER_PASSWORD = "Dock3rHubPassw0rd!"
OPENAI_KEY = "sk-proj-Tq3vX9zB2nM7kL4pQ8rS1uW6"
ENV_DB_PASSWORD = "hunter2-prod"
SESSION_SECRET = "correct horse battery staple"
JSON_PASSWORD = "j50n-Pa55word"
JSON_TOKEN = "tok_live_8f7e6d5c"
PEM_BODY = "MIIEowIBAAKCAQEA7yYv2pRQz3mFhXk9LtB1cD4eG6hJ8kM0nP2qR4sT6uV8wX0y"
AWS_KEY_ID = "AKIAZ7QX4M2N8P6R3T5V"
AWS_SECRET = "k9Fq2Lx7Bz4Mv1Nc8Xs3Wd6Rt0Yp5Hj2Gu9Ke4A"
PG_PASSWORD = "pgS3cretPw"
SLACK_TOKEN = "xoxb-2048-4096-AbCdEfGhIjKlMnOp"
ANTHROPIC_KEY = "sk-ant-api03-Zq8Wm3Nk5Lp2Xr7Vt4Ys9Bd1"

LOG = f"""\
$ pytest -q tests/
============================= test session starts ==============================
collected 12 items

tests/test_api.py ..F.........                                            [100%]

=================================== FAILURES ===================================
_____________________________ test_refresh_session _____________________________
Traceback (most recent call last):
  File "/home/alice/.venv/lib/python3.11/site-packages/httpx/_client.py", line 1014, in send
    response = self._send_handling_auth(request)
  File "{WORKTREE}/src/app/api.py", line 88, in refresh_session
    raise SessionExpired(f"session {{sid}} expired")
app.errors.SessionExpired: session 42 expired
tests/test_api.py:57: AssertionError
FAILED tests/test_api.py::test_refresh_session - app.errors.SessionExpired: session 42 expired
========================= 1 failed, 11 passed in 3.21s =========================
$ env
HOME=/home/alice
GITHUB_TOKEN={GITHUB_TOKEN}
OPENAI_API_KEY={OPENAI_KEY}
ANTHROPIC_API_KEY={ANTHROPIC_KEY}
AWS_ACCESS_KEY_ID={AWS_KEY_ID}
AWS_SECRET_ACCESS_KEY={AWS_SECRET}
$ curl -sS -H "Authorization: Bearer {BEARER}" https://api.example.com/v1/sessions
{{"error": "expired"}}
$ docker login --username ci-bot --password {DOCKER_PASSWORD} registry.example.com
Login Succeeded
$ cat .env
export DB_PASSWORD={ENV_DB_PASSWORD}
SESSION_SECRET="{SESSION_SECRET}"
DATABASE_URL=postgres://app:{PG_PASSWORD}@db.internal:5432/app
$ cat config/local.json
{{"db": {{"user": "app", "password": "{JSON_PASSWORD}"}}, "api_token": "{JSON_TOKEN}"}}
$ cat deploy/id_rsa
-----BEGIN RSA PRIVATE KEY-----
{PEM_BODY}
-----END RSA PRIVATE KEY-----
notify: slack token {SLACK_TOKEN} posted to #ci
psql postgresql://admin:{PG_PASSWORD}@10.0.0.5/app -c 'select 1'
See https://docs.example.com/errors/session-expired for details.
aws configured with key {AWS_KEY_ID} from /root/.aws/credentials
"""

SECRETS = [
    GITHUB_TOKEN,
    BEARER,
    DOCKER_PASSWORD,
    OPENAI_KEY,
    ANTHROPIC_KEY,
    ENV_DB_PASSWORD,
    SESSION_SECRET,
    JSON_PASSWORD,
    JSON_TOKEN,
    PEM_BODY,
    AWS_KEY_ID,
    AWS_SECRET,
    PG_PASSWORD,
    SLACK_TOKEN,
    "/home/alice",
    "/root/.aws",
    WORKTREE,
]

USEFUL = [
    "tests/test_api.py::test_refresh_session",
    "tests/test_api.py:57: AssertionError",
    "app.errors.SessionExpired: session 42 expired",
    '  File "src/app/api.py", line 88, in refresh_session',
    f'  File "{PATH_MARKER}/_client.py", line 1014, in send',
    "1 failed, 11 passed in 3.21s",
    "https://api.example.com/v1/sessions",
    "See https://docs.example.com/errors/session-expired for details.",
    "GITHUB_TOKEN=[REDACTED]",
    "export DB_PASSWORD=[REDACTED]",
    '"password": "[REDACTED]"',
    "Authorization: Bearer [REDACTED]",
    "--password [REDACTED] registry.example.com",
    "DATABASE_URL=[REDACTED]",
    "psql postgresql://admin:[REDACTED]@10.0.0.5/app -c 'select 1'",
    REDACTED_PRIVATE_KEY,
    f"from {PATH_MARKER}/credentials",
    "Login Succeeded",
]


def test_leaked_log_loses_every_secret() -> None:
    clean = sanitize(LOG, worktree=WORKTREE)
    assert [s for s in SECRETS if s in clean] == []


def test_leaked_log_keeps_useful_text() -> None:
    clean = sanitize(LOG, worktree=WORKTREE)
    assert [u for u in USEFUL if u not in clean] == []
    assert clean.count("\n") == LOG.count("\n") - 2  # only the PEM body and END lines went


def test_leaked_log_is_idempotent() -> None:
    once = sanitize(LOG, worktree=WORKTREE)
    assert sanitize(once, worktree=WORKTREE) == once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('API_KEY="abc"', 'API_KEY="[REDACTED]"'),
        ("export DB_PASSWORD=hunter2", "export DB_PASSWORD=[REDACTED]"),
        ("API_TOKEN='x y z' rest", "API_TOKEN='[REDACTED]' rest"),
        ("CI=true", "CI=[REDACTED]"),
        ('{"password": "x", "user": "bob"}', '{"password": "[REDACTED]", "user": "bob"}'),
        ("{'secret_key': 'abc'}", "{'secret_key': '[REDACTED]'}"),
        ("token: abc123\nname: web", "token: [REDACTED]\nname: web"),
        ("db.passwd=abc", "db.passwd=[REDACTED]"),
        ("clientCredential=abc", "clientCredential=[REDACTED]"),
        ("private_key: xyz", "private_key: [REDACTED]"),
        (
            "https://h.example/cb?access_token=abc123&s=9",
            "https://h.example/cb?access_token=[REDACTED]&s=9",
        ),
        ("postgres://user:pass@host/db", "postgres://user:[REDACTED]@host/db"),
        ("Authorization: Bearer abc", "Authorization: Bearer [REDACTED]"),
        ("Bearer abcdef123456", "Bearer [REDACTED]"),
        ("Authorization: Basic YWxhZGRpbjpvcGVu", "Authorization: Basic [REDACTED]"),
        ("login --password s3cret --user x", "login --password [REDACTED] --user x"),
        ("id AKIAIOSFODNN7EXAMPLE ok", "id [REDACTED] ok"),
        ("id ASIAIOSFODNN7EXAMPLE ok", "id [REDACTED] ok"),
        ("gho_16C7e42F292c6912E7710c838347Ae178B4a!", "[REDACTED]!"),
        ("github_pat_11ABCDEFG0123456789_abcdefXYZ", "[REDACTED]"),
        ("key sk-ant-api03-abcdefghij0123456789", "key [REDACTED]"),
        ("xoxp-1234567890-abcdef", "[REDACTED]"),
        ("jwt eyJhbGciOi.eyJzdWIiOi.c2lnbmF0dXJl end", "jwt [REDACTED] end"),
        ("sum d41d8cd98f00b204e9800998ecf8427e ok", "sum [REDACTED] ok"),
        ("commit 9fceb02d0ae598e95dc970b74767f19372d61af8", "commit [REDACTED]"),
        ("blob wJalrXUtnFEMI/K7MDENG/bPxRfiCYq3Rk8Zp0Tx4== end", "blob [REDACTED] end"),
        ("url-safe Zm9vYmFyLWJhei1xdXV4_MTIzNDU2Nzg5MGFiY2RlZg end", "url-safe [REDACTED] end"),
        (
            "x\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\nNzaC1\n-----END OPENSSH PRIVATE KEY-----\ny",
            f"x\n{REDACTED_PRIVATE_KEY}\ny",
        ),
        ("cut -----BEGIN PRIVATE KEY-----\nMIIE", f"cut {REDACTED_PRIVATE_KEY}"),
        # A token glued to another is found once the first is redacted.
        ("AKIAZ7QX4M2N8P6R3T5Vxoxb-2048-4096-AbCdEfGhIjKl", "[REDACTED][REDACTED]"),
    ],
)
def test_secret_rules(text: str, expected: str) -> None:
    assert sanitize(text) == expected
    assert sanitize(expected) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("open /home/alice/notes.txt failed", f"open {PATH_MARKER}/notes.txt failed"),
        ('"/Users/bob/proj/x.py", line 3', f'"{PATH_MARKER}/x.py", line 3'),
        ("cat /etc/hosts.", f"cat {PATH_MARKER}/hosts."),
        ("(/var/log/syslog)", f"({PATH_MARKER}/syslog)"),
        ("--out=/tmp/build/", f"--out={PATH_MARKER}/build"),
        (f"{WORKTREE}/src/a.py:3: error", "src/a.py:3: error"),
        (f"cd {WORKTREE} && make", "cd . && make"),
        (f"{WORKTREE}2/src/a.py", f"{PATH_MARKER}/a.py"),
        ("https://example.com/a/b stays", "https://example.com/a/b stays"),
        ("src/fleet_core/runtime/local.py stays", "src/fleet_core/runtime/local.py stays"),
        ("./run.sh and ../up and ~/x stay", "./run.sh and ../up and ~/x stay"),
    ],
)
def test_path_rules(text: str, expected: str) -> None:
    assert sanitize(text, worktree=WORKTREE) == expected
    assert sanitize(expected, worktree=WORKTREE) == expected


def test_worktree_given_as_path_with_trailing_slash() -> None:
    assert sanitize(f"{WORKTREE}/b.py", worktree=Path(WORKTREE + "/")) == "b.py"
    assert sanitize(f"{WORKTREE}/b.py") == f"{PATH_MARKER}/b.py"


# One vector per token shape, in prose where no other rule would see it (no `key=`, shorter
# than the 40-character rule for random strings).
GOOGLE_KEY = "AIzaSyD9xQ2mL7vB4nK8pR3tW6yZ1cF5hJ0gE3a"
HF_TOKEN = "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"
SLACK_BOT = "xoxb-17653672481-19874698323-pdFZKVeTuE8sk7oOcBrzbqgy"
SLACK_APP = "xapp-1-A02LXD1E9LZ-2626893234179"  # shorter than the rule for random strings
SLACK_REFRESH = "xoxe-1-My0xLTIyNDQ5MTE2NDYx"
SLACK_ROTATING = "xoxe.xoxp-1-Mi0yLTIyNDQ5MTE2NDYxNDctMjI0NTMz"
CERT_BODY = "MIIBszCCAVmgAwIBAgIUYw8iFpGdq0jX2s3Q1ZJpIuQvS7owCgYIKoZIzj0EAwIw"
PGP_BODY = "lQVYBGXk2iQBDADJ6m8bQfV3sd5yW7+Q0kNwJr3Zp5gXc2hA9sN1bS4pQeKz"


@pytest.mark.parametrize(
    ("text", "secret", "expected"),
    [
        (f"maps client uses {GOOGLE_KEY} today", GOOGLE_KEY, "maps client uses [REDACTED] today"),
        (f'"{GOOGLE_KEY}"', GOOGLE_KEY, '"[REDACTED]"'),
        (f"logged in to the Hub as {HF_TOKEN}.", HF_TOKEN, "logged in to the Hub as [REDACTED]."),
        (f"notify via {SLACK_BOT} now", SLACK_BOT, "notify via [REDACTED] now"),
        (f"socket mode {SLACK_APP} ok", SLACK_APP, "socket mode [REDACTED] ok"),
        (f"refresh {SLACK_REFRESH} ok", SLACK_REFRESH, "refresh [REDACTED] ok"),
        (f"rotating {SLACK_ROTATING} ok", SLACK_ROTATING, "rotating [REDACTED] ok"),
        (
            f"ca:\n-----BEGIN CERTIFICATE-----\n{CERT_BODY}\n-----END CERTIFICATE-----\ndone",
            CERT_BODY,
            f"ca:\n{REDACTED_PEM}\ndone",
        ),
        (
            f"-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n{CERT_BODY}\n"
            "-----END EC PRIVATE KEY-----",
            CERT_BODY,
            REDACTED_PRIVATE_KEY,
        ),
        (
            f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{PGP_BODY}\n"
            "-----END PGP PRIVATE KEY BLOCK-----\nnext",
            PGP_BODY,
            f"{REDACTED_PRIVATE_KEY}\nnext",
        ),
        (
            f"-----BEGIN PUBLIC KEY-----\n{CERT_BODY}\n-----END PUBLIC KEY-----",
            CERT_BODY,
            REDACTED_PEM,
        ),
        (f"cut -----BEGIN CERTIFICATE-----\n{CERT_BODY}", CERT_BODY, f"cut {REDACTED_PEM}"),
    ],
    ids=[
        "google",
        "google-quoted",
        "huggingface",
        "slack-bot",
        "slack-app",
        "slack-refresh",
        "slack-rotating",
        "pem-certificate",
        "pem-encrypted-ec",
        "pem-pgp-private",
        "pem-public",
        "pem-cut",
    ],
)
def test_token_shapes(text: str, secret: str, expected: str) -> None:
    clean = sanitize(text)
    assert secret not in clean
    assert clean == expected
    assert sanitize(clean) == clean


@pytest.mark.parametrize(
    "text",
    [
        "AIza is how the key starts; AIzaShort is not one",
        "the hf_hub_download helper and hf_transfer",
        "xapp-1 and xoxe are prefixes",
        "-----BEGIN and -----END alone are not a block",
        "--------------------------------------------------",
    ],
)
def test_near_miss_token_shapes_stay(text: str) -> None:
    assert sanitize(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox jumps over the lazy dog. It was 12:30 and 1/2 done, and/or not.",
        "src/a/b.py",
        "tests/integration/some_long_directory_name/another_dir/module_name1.py",
        "tests/Integration/SomeLongDirectoryName/AnotherDir2/ModuleName.py",
        "AbstractSingletonProxyFactoryBean2ImplementationHelper",
        "test_sanitize_keeps_ordinary_prose_and_a_path_2_times_over",
        "tests/test_auth.py::test_token_refresh PASSED",
        "src/auth.py:12: error: Incompatible types",
        "auth-db:5432 refused the connection",
        "E   KeyError: 'token'",
        "Author: Alice <alice@example.com>",
        "Basic usage: see the Token limits section.",
        "x == y and key == 'z'",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "git checkout -b fleet/T42-fix main",
        "git commit --author Alice -m 'fix'",
        "",
    ],
)
def test_ordinary_text_is_unchanged(text: str) -> None:
    assert sanitize(text) == text


def test_markers_are_distinct_constants() -> None:
    assert (REDACTED, PATH_MARKER, REDACTED_PRIVATE_KEY) == (
        "[REDACTED]",
        "[PATH]",
        "[REDACTED PRIVATE KEY]",
    )
