"""One client for every OpenAI-compatible chat endpoint: labeling, the prompt preview, endpoint evaluation.

OpenAI, DashScope's compatible mode, a local vLLM or Ollama server all speak the same
protocol; :func:`lab.endpoint_keys.load_providers` knows their base URLs and models. This module
owns what talking to one of them takes, given its URL, model and key (:mod:`lab.endpoint_keys`): images
as data URLs within a pixel budget, chat messages, requests with the ``openai`` SDK's retries
(429 with ``Retry-After``, 5xx, timeouts) and timeout (:mod:`lab.endpoint_http`), and every way
a request can fail as one reason in both languages, with the key scrubbed out (:class:`EndpointError`).
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from lab import __version__
from lab.conversation import IMAGE_PLACEHOLDER
from lab.endpoint_keys import OPENAI_ENV_HEADERS, OPENAI_URL, PLACEHOLDER_KEY, Endpoint, same_url
from lab.errors import LabError
from lab.images import open_image
from lab.text import Msg

IMAGE_FORMATS = ("jpeg", "png")


# ---------------------------------------------------------------- images and messages


def encode_image(path: Path, max_pixels: int, image_format: str = "jpeg") -> str:
    """The image as a ``data:`` URL: upright, RGB, shrunk to ``max_pixels``; raises BadImageError."""
    image = open_image(path, max_pixels=max_pixels)
    buffer = io.BytesIO()
    if image_format == "png":
        image.save(buffer, format="PNG", optimize=False)
    else:
        image.save(buffer, format="JPEG", quality=90)
    mime = "image/png" if image_format == "png" else "image/jpeg"
    return f"data:{mime};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def chat_messages(messages: list[dict], image_urls: list[str]) -> list[dict]:
    """Dataset messages (``<image>`` marks each picture in user turns) as chat-completions messages.

    Each ``<image>`` takes the next URL; when no user turn has one, the pictures go first::

        [{"role": "user", "content": "Look: <image> then answer."}], ["data:..."]
        -> [{"role": "user", "content": [{"type": "text", "text": "Look: "},
                                         {"type": "image_url", "image_url": {"url": "data:..."}},
                                         {"type": "text", "text": " then answer."}]}]
    """
    users = [m for m in messages if m["role"] == "user" and isinstance(m["content"], str)]
    if image_urls and users and not any(IMAGE_PLACEHOLDER in m["content"] for m in users):
        first = users[0]
        users[0] = {**first, "content": IMAGE_PLACEHOLDER * len(image_urls) + first["content"]}
        messages = [users[0] if m is first else m for m in messages]
    urls = iter(image_urls)
    converted = []
    for message in messages:
        content = message["content"]
        if message["role"] != "user" or not isinstance(content, str) or IMAGE_PLACEHOLDER not in content:
            converted.append({"role": message["role"], "content": content})
            continue
        parts: list[dict] = []
        for i, chunk in enumerate(content.split(IMAGE_PLACEHOLDER)):
            url = next(urls, None) if i > 0 else None
            if url:
                parts.append({"type": "image_url", "image_url": {"url": url}})
            if chunk.strip():
                parts.append({"type": "text", "text": chunk})
        converted.append({"role": "user", "content": parts})
    return converted


def build_messages(system: str, user: str, image_urls: list[str], history: list[tuple[str, str]] = ()) -> list[dict]:
    """A system prompt, a user prompt about the pictures, then (answer, follow-up) pairs, as chat messages."""
    messages = [{"role": "system", "content": system}] if system.strip() else []
    messages.append({"role": "user", "content": user})
    for answer, follow_up in history:
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": follow_up}]
    return chat_messages(messages, image_urls)


# ---------------------------------------------------------------- requests


@dataclass
class Completion:
    """One answer, with what it cost in tokens, time and retries."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0
    retries: int = 0
    finish_reason: str | None = None
    refusal: str | None = None


class EndpointError(LabError):
    """A request that failed for good (after the retries).

    ``kind`` is ``timeout``, ``connection``, ``malformed`` or ``http_<status>``; ``reason`` is a
    :class:`~lab.text.Msg` without the key; ``retries`` were spent on it.
    """

    def __init__(self, kind: str, reason: Msg, retries: int = 0):
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
        self.retries = retries

    @property
    def fatal(self) -> bool:
        """The server cannot be used at all (unreachable, refuses the key, unknown URL or model)."""
        return self.kind in ("connection", "http_401", "http_403", "http_404")


class ChatClient:
    """Chat completions from one :class:`Endpoint`; use as ``async with ChatClient(endpoint, ...) as client``."""

    def __init__(self, endpoint: Endpoint, *, timeout: float = 60.0, max_retries: int = 3):
        self.endpoint = endpoint
        self.timeout = timeout
        self.max_retries = max_retries
        self._http = None

    async def __aenter__(self) -> ChatClient:
        from lab.endpoint_http import JsonPoster, chat_url

        # A connection pool belongs to the event loop it first runs in, so the session is
        # made here, inside the caller's loop, and closed when it is done.
        http = JsonPoster(
            chat_url(self.endpoint.base_url), self.headers(), timeout=self.timeout, max_retries=self.max_retries
        )
        await http.open()
        self._http = http
        return self

    async def __aexit__(self, *exc) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    def headers(self) -> dict[str, str]:
        """What every request carries: the key (none when there is none), JSON, who asks."""
        headers = {
            "Accept": "application/json",
            "Content-Type": "application/json",
            "User-Agent": f"vlm-lab/{__version__}",
        }
        if self.endpoint.api_key:
            headers["Authorization"] = f"Bearer {self.endpoint.api_key}"
        if same_url(self.endpoint.base_url, os.environ.get("OPENAI_BASE_URL") or OPENAI_URL):
            headers.update((name, os.environ[env]) for name, env in OPENAI_ENV_HEADERS if os.environ.get(env))
        return headers

    def request(
        self, messages: list[dict], *, max_new_tokens: int, temperature: float, json_mode: bool = False
    ) -> dict:
        """The request body for ``messages``; the answer's length goes in the parameter the server knows."""
        body: dict = {"model": self.endpoint.model, "messages": messages, "temperature": temperature}
        # OpenAI's newer models refuse max_tokens; other servers may not know its successor.
        official = urlsplit(self.endpoint.base_url).hostname == "api.openai.com"
        body["max_completion_tokens" if official else "max_tokens"] = max_new_tokens
        if json_mode:
            body["response_format"] = {"type": "json_object"}
        return body

    async def complete(self, body: dict) -> Completion:
        """Send one request; raises :class:`EndpointError` once the retries are spent."""
        if self._http is None:
            raise RuntimeError("use the client inside 'async with'")
        attempts = 0
        start = time.perf_counter()
        try:
            # The body is encoded once (as the SDK encodes it) and the answer read as plain
            # JSON: the SDK's request path and response models cost about 3 ms of CPU per
            # request and capped throughput at high concurrency (BENCHMARKS.md, labeling).
            payload = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            answer = await self._http.post(payload)
            attempts = answer.attempts
            completion = answer.json()
            choice = completion["choices"][0]
            message, usage = choice["message"], completion.get("usage") or {}
            text = message.get("content") or ""
            if not isinstance(text, str):
                raise TypeError("the answer's content is not text")
        except Exception as err:  # every way a request can fail becomes one reason
            raise self._error(err, getattr(err, "attempts", attempts)) from None
        return Completion(
            text=text,
            prompt_tokens=usage.get("prompt_tokens") or 0,
            completion_tokens=usage.get("completion_tokens") or 0,
            seconds=time.perf_counter() - start,
            retries=max(0, attempts - 1),
            finish_reason=choice.get("finish_reason"),
            refusal=message.get("refusal"),
        )

    def _error(self, err: Exception, attempts: int) -> EndpointError:
        from lab.endpoint_http import RequestFailed

        tries, url = max(1, attempts), self.endpoint.base_url
        failed = err.kind if isinstance(err, RequestFailed) else "malformed"
        if failed == "timeout":
            kind, reason = (
                "timeout",
                Msg("timed out after {timeout:g} s ({tries} tries)", timeout=self.timeout, tries=tries),
            )
        elif failed == "status":
            kind, reason = f"http_{err.status_code}", _status_reason(err, tries)
        elif failed == "connection":
            kind, reason = "connection", Msg("cannot reach {url} ({tries} tries)", url=url, tries=tries)
        else:
            kind, reason = (
                "malformed",
                Msg("malformed response from the server ({err_type})", err_type=type(err).__name__),
            )
        return EndpointError(kind, self._scrub(reason), tries - 1)

    def _scrub(self, reason: Msg) -> Msg:
        key = self.endpoint.api_key
        if not key or key == PLACEHOLDER_KEY:
            return reason
        return _without(reason, key)


def _without(message: Msg, key: str) -> Msg:
    """``message`` with ``key`` starred out of its values (the server's own words may repeat it)."""
    values = {
        name: _without(value, key)
        if isinstance(value, Msg)
        else value
        if isinstance(value, (int, float))
        else str(value).replace(key, "***")
        for name, value in message.values.items()
    }
    return Msg(message.template, **values)  # dynamic template: the same message, its values scrubbed


def _status_reason(err, tries: int) -> Msg:
    status = err.status_code
    body = err.body  # already unwrapped from {"error": {...}}
    detail = body.get("message") if isinstance(body, dict) else body
    detail = str(detail or "").strip()[:200]  # the server's own words, shown as they are in both languages
    if status == 401:
        return Msg("the server refused the API key (HTTP 401): {detail}", detail=detail or Msg("no details"))
    if status == 404:
        return Msg(
            "not found (HTTP 404), check the base URL and the model name: {detail}", detail=detail or Msg("no details")
        )
    if status == 429:
        return Msg(
            "rate limited (HTTP 429) after {tries} tries: {detail}", tries=tries, detail=detail or Msg("no details")
        )
    if status >= 500:
        return Msg(
            "server error (HTTP {status}) after {tries} tries: {detail}",
            status=status,
            tries=tries,
            detail=detail or Msg("no details"),
        )
    return Msg("request refused (HTTP {status}): {detail}", status=status, detail=detail or Msg("no details"))
