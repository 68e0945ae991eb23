"""One client for every OpenAI-compatible chat endpoint: labeling, the prompt preview, endpoint evaluation.

OpenAI, DashScope's compatible mode, a local vLLM or Ollama server all speak the same
protocol; :func:`load_providers` knows their base URLs and models. This module owns what
talking to one of them takes: which URL, model and key (:func:`resolve_endpoint`), images
as data URLs within a pixel budget, chat messages, requests with the ``openai`` SDK's retries
(429 with ``Retry-After``, 5xx, timeouts) and timeout (:mod:`lab.endpoint_http`), and every way
a request can fail as one reason in both languages, with the key scrubbed out (:class:`EndpointError`).

Keys stay home: a key from the server's environment is sent only to the base URL it was set
up for (``OPENAI_API_KEY`` to ``OPENAI_BASE_URL``, else to OpenAI; a provider's ``key_env``
to that provider's ``base_url``), so a visitor of a shared app who types another URL cannot
collect the owner's key. A key typed by the person goes where they say; a local server gets
a placeholder.
"""

from __future__ import annotations

import base64
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from lab import __version__
from lab.conversation import IMAGE_PLACEHOLDER
from lab.errors import ConfigError, LabError
from lab.images import open_image
from lab.paths import PRESETS_DIR, restricted, workspace
from lab.text import Msg
from lab.yaml_files import check_keys, closest, load_yaml_strict

OPENAI_URL = "https://api.openai.com/v1"
OPENAI_KEY_ENV = "OPENAI_API_KEY"
PLACEHOLDER_KEY = "EMPTY"  # what servers that check no key accept
PROVIDER_KEYS = ("title", "base_url", "models", "key_env", "needs_key")
IMAGE_FORMATS = ("jpeg", "png")
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
# Sent only where OPENAI_API_KEY goes, as the SDK sends them when they are set.
OPENAI_ENV_HEADERS = (("OpenAI-Organization", "OPENAI_ORG_ID"), ("OpenAI-Project", "OPENAI_PROJECT_ID"))


# ---------------------------------------------------------------- providers, URLs and keys


def load_providers() -> dict[str, dict]:
    """Provider presets: ``presets/providers.yaml`` with the workspace's file laid over it.

    A provider names the environment key it may receive, so on a shared deployment the
    workspace's file (visitors' actions write into the workspace) is not read: there the
    providers are the checkout's own file, which is the owner's. The ``openai`` preset follows
    ``OPENAI_BASE_URL`` when it is set, as the ``openai`` SDK does.
    """
    providers: dict[str, dict] = {}
    files = [PRESETS_DIR / "providers.yaml"]
    if not restricted():
        files.append(workspace() / "presets" / "providers.yaml")
    for path in files:
        if not path.is_file():
            continue
        entries = load_yaml_strict(path, ("providers",)).get("providers") or {}
        for name, entry in entries.items():
            if not isinstance(entry, dict) or not entry.get("base_url"):
                raise ConfigError("Provider '{name}' in {path} needs at least a base_url.", name=name, path=path)
            check_keys(entry, PROVIDER_KEYS, f"provider '{name}' in {path}")
            providers[str(name)] = {"title": str(name), "models": [], "needs_key": True, **entry}
    openai = providers.get("openai")
    if openai and os.environ.get("OPENAI_BASE_URL") and same_url(openai["base_url"], OPENAI_URL):
        openai["base_url"] = os.environ["OPENAI_BASE_URL"]
    return providers


def same_url(a: str, b: str) -> bool:
    """Whether two base URLs name the same place: scheme, host, port and path (without a trailing slash)."""
    return _normalized(a) == _normalized(b)


def _normalized(url: str) -> tuple:
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:  # not a port: such a URL matches nothing but itself
        return (url.strip(),)
    return scheme, parts.hostname or "", port, parts.path.rstrip("/")


def is_local(base_url: str) -> bool:
    """Whether the URL points at this machine (such servers usually check no key)."""
    return (urlsplit(base_url.strip()).hostname or "") in LOCAL_HOSTS


def key_homes() -> list[tuple[str, str]]:
    """``(environment variable, the one base URL its key may be sent to)`` for every key the setup knows."""
    homes = [(OPENAI_KEY_ENV, os.environ.get("OPENAI_BASE_URL") or OPENAI_URL)]
    for entry in load_providers().values():
        name = entry.get("key_env")
        if name and name != OPENAI_KEY_ENV:
            homes.append((name, entry["base_url"]))
    return homes


def environment_keys() -> list[str]:
    """Names of the environment variables that hold a key for a service that needs one (never the keys)."""
    names = [OPENAI_KEY_ENV, *(p.get("key_env") for p in load_providers().values() if p.get("needs_key", True))]
    return [name for name in dict.fromkeys(names) if name and os.environ.get(name)]


def choose_key(base_url: str, typed: str = "", provider: dict | None = None) -> str:
    """The key to send to ``base_url``; a ConfigError (one sentence) when no key may be sent there.

    A typed key goes anywhere. A key from the environment goes only to its home (:func:`key_homes`).
    A local server, or a provider that needs no key, gets the placeholder.
    """
    if typed:
        return typed
    homes = [name for name, home in key_homes() if same_url(home, base_url)]
    for name in homes:
        if os.environ.get(name):
            return os.environ[name]
    if is_local(base_url) or (provider is not None and not provider.get("needs_key", True)):
        return PLACEHOLDER_KEY
    sentence = missing_key_sentence(homes[0]) if homes else foreign_url_sentence(base_url)
    raise ConfigError(sentence)  # dynamic template: one of the two sentences above


def missing_key_sentence(env: str = OPENAI_KEY_ENV) -> Msg:
    """What to do when the URL is a key's home but the key is not set."""
    return Msg(
        "No API key: set {env} in the environment, or type a key of your own (the API key box in the "
        "app), or use a local model, which needs none (the model loaded in the app, --local-model on the "
        "command line).",
        env=env,
    )


def foreign_url_sentence(base_url: str) -> Msg:
    """Why a URL no key from the environment belongs to gets none, and how the owner makes it official."""
    return Msg(
        "No API key for {base_url}: keys from the server's environment are sent only to the address they "
        "were set up for, so give a key of your own (the API key box in the app), or, if this server is "
        "yours, set OPENAI_BASE_URL={base_url} so that OPENAI_API_KEY goes there.",
        base_url=base_url,
    )


@dataclass(frozen=True)
class Endpoint:
    """Where chat requests go: a base URL, a model and the key chosen for that URL."""

    base_url: str
    model: str
    api_key: str = field(default=PLACEHOLDER_KEY, repr=False)


def resolve_endpoint(
    provider: str = "", base_url: str = "", model: str = "", api_key: str = "", need_key: bool = True
) -> Endpoint:
    """Fill in the base URL and model from the provider (else ``$OPENAI_BASE_URL``, else OpenAI) and choose the key.

    ``need_key=False`` (a cost estimate, which sends nothing) keeps only a typed key and refuses nothing.
    """
    providers = load_providers() if provider else {}
    if provider and provider not in providers:
        hint = closest(provider, providers)
        raise ConfigError("Unknown provider '{provider}'{hint}.", provider=provider, hint=hint)
    entry = providers.get(provider)
    base_url = base_url or (entry or {}).get("base_url") or os.environ.get("OPENAI_BASE_URL") or OPENAI_URL
    model = model or ((entry or {}).get("models") or [""])[0]
    if not model:
        raise ConfigError("No model given; pick a provider or type a model name (for example gpt-4o-mini).")
    key = choose_key(base_url, api_key, entry) if need_key else api_key
    return Endpoint(base_url, model, key)


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
