"""The HTTP API of the headless server (FastAPI): the conductor's verbs for callers that prove
who they are with an ES256 JWT. Never imports a UI toolkit."""
