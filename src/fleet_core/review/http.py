"""Reviewers behind a model provider's HTTP API, through httpx: Anthropic Messages (a forced
tool call whose input follows the schema), OpenAI Responses (a strict `json_schema` text
format) and Gemini generateContent (a JSON response schema).

429 and 5xx answers are retried (at most `attempts` calls in all), waiting what `Retry-After`
says (seconds or an HTTP date, at most `max_wait_s`) or else 1, 2, 4 ... seconds."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from fleet_core.review.prompt import SYSTEM
from fleet_core.review.reviewers import RawAnswer, ReviewRequest
from fleet_core.review.verdict import SCHEMA

DEFAULT_URLS = {
    "anthropic": "https://api.anthropic.com",
    "openai": "https://api.openai.com",
    "gemini": "https://generativelanguage.googleapis.com",
}
KEY_NAMES = {"anthropic": "ANTHROPIC_API_KEY", "openai": "OPENAI_API_KEY",
             "gemini": "GEMINI_API_KEY"}  # fmt: skip
DEFAULT_MODELS = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-5", "gemini": "gemini-2.5-pro"}
ANTHROPIC_VERSION = "2023-06-01"
TOOL = "submit_review"


class ProviderError(Exception):
    """The provider did not answer usably (an error status, or an answer without content)."""


def retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


class HttpReviewer:
    """One provider, one model, one focus."""

    def __init__(
        self,
        kind: str,
        focus: str,
        *,
        api_key: str,
        model: str | None = None,
        base_url: str | None = None,
        timeout_s: float = 300.0,
        attempts: int = 4,
        max_wait_s: float = 60.0,
        backoff_s: float = 1.0,
    ) -> None:
        if kind not in DEFAULT_URLS:
            raise ValueError(f"unknown provider {kind!r}")
        self.kind = kind
        self.focus = focus
        self.model = model or DEFAULT_MODELS[kind]
        self.base_url = (base_url or DEFAULT_URLS[kind]).rstrip("/")
        self._key = api_key
        self.timeout_s = timeout_s
        self.attempts = attempts
        self.max_wait_s = max_wait_s
        self.backoff_s = backoff_s
        self.calls = 0  # HTTP requests made (tests, logs)

    async def ask(self, request: ReviewRequest) -> RawAnswer:
        url, headers, body = self._request(request.prompt)
        data = await self._post(url, headers, body)
        return RawAnswer(self._text(data))

    async def _post(self, url: str, headers: dict[str, str], body: dict[str, Any]) -> Any:
        import httpx  # only when a provider reviews (it loads rich for its CLI)

        async with httpx.AsyncClient(timeout=self.timeout_s) as client:
            for attempt in range(self.attempts):
                self.calls += 1
                response = await client.post(url, headers=headers, json=body)
                code = response.status_code
                if code == 429 or code >= 500:
                    if attempt + 1 >= self.attempts:
                        raise ProviderError(f"{self.kind}: HTTP {code} after {self.attempts} "
                                            f"attempts: {response.text[:300]}")  # fmt: skip
                    wait = retry_after(response.headers.get("retry-after"))
                    if wait is None:
                        wait = self.backoff_s * 2**attempt
                    await asyncio.sleep(min(wait, self.max_wait_s))
                    continue
                if code >= 400:
                    raise ProviderError(f"{self.kind}: HTTP {code}: {response.text[:300]}")
                try:
                    return response.json()
                except ValueError:
                    raise ProviderError(f"{self.kind}: the answer is not JSON") from None
        raise ProviderError(f"{self.kind}: no answer")  # attempts < 1

    def _request(self, prompt: str) -> tuple[str, dict[str, str], dict[str, Any]]:
        if self.kind == "anthropic":
            headers = {"x-api-key": self._key, "anthropic-version": ANTHROPIC_VERSION}
            body: dict[str, Any] = {
                "model": self.model,
                "max_tokens": 4096,
                "system": SYSTEM,
                "messages": [{"role": "user", "content": prompt}],
                "tools": [
                    {
                        "name": TOOL,
                        "description": "Submit the review's verdict.",
                        "input_schema": SCHEMA,
                    }
                ],
                "tool_choice": {"type": "tool", "name": TOOL},
            }
            return f"{self.base_url}/v1/messages", headers, body
        if self.kind == "openai":
            headers = {"authorization": f"Bearer {self._key}"}
            body = {
                "model": self.model,
                "instructions": SYSTEM,
                "input": prompt,
                "text": {
                    "format": {
                        "type": "json_schema",
                        "name": "review",
                        "schema": SCHEMA,
                        "strict": True,
                    }
                },
            }
            return f"{self.base_url}/v1/responses", headers, body
        headers = {"x-goog-api-key": self._key}
        body = {
            "systemInstruction": {"parts": [{"text": SYSTEM}]},
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "generationConfig": {
                "responseMimeType": "application/json",
                "responseSchema": gemini_schema(SCHEMA),
            },
        }
        return f"{self.base_url}/v1beta/models/{self.model}:generateContent", headers, body

    def _text(self, data: Any) -> str:
        """The answer's JSON text out of the provider's response shape."""
        try:
            if self.kind == "anthropic":
                for block in data["content"]:
                    if block.get("type") == "tool_use" and block.get("name") == TOOL:
                        return json.dumps(block["input"])
                texts = [b["text"] for b in data["content"] if b.get("type") == "text"]
                return "".join(texts)
            if self.kind == "openai":
                if data.get("status") not in (None, "completed"):
                    raise ProviderError(f"openai: response {data.get('status')}")
                parts = [c["text"] for item in data["output"] if item.get("type") == "message"
                         for c in item["content"] if c.get("type") == "output_text"]  # fmt: skip
                return "".join(parts)
            parts = data["candidates"][0]["content"]["parts"]
            return "".join(p.get("text", "") for p in parts)
        except (KeyError, IndexError, TypeError) as exc:
            raise ProviderError(f"{self.kind}: unexpected answer shape ({exc!r})") from None


def gemini_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema in Gemini's OpenAPI subset: upper-case types, no additionalProperties, no
    string or array length limits."""
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("additionalProperties", "maxLength", "maxItems", "minimum"):
            continue
        if key == "type":
            out[key] = str(value).upper()
        elif key == "properties":
            out[key] = {name: gemini_schema(sub) for name, sub in value.items()}
        elif key == "items":
            out[key] = gemini_schema(value)
        else:
            out[key] = value
    if "enum" in out:
        out["format"] = "enum"
    return out
