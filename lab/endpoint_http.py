"""The HTTP side of :mod:`lab.endpoint_client`: one aiohttp session posting JSON with the ``openai`` SDK's retries.

The SDK's request path (options copied into pydantic models, headers and URL merged, three
transport layers) cost more CPU per request than the rest of labeling together, so chat
requests go straight through aiohttp, the SDK's own transport. What the SDK did is kept and
named here: the URL join (``base_url`` + ``/chat/completions``), the timeout per attempt (to
connect and between reads, no total), proxies from the environment, its CA certificates, which
answers are retried (408, 409, 429, 5xx, ``x-should-retry``, dropped connections and timeouts)
and how long to wait between tries (``retry-after-ms`` / ``retry-after`` up to two minutes,
else 0.5 s doubling to 8 s less up to a quarter of jitter), and the server's error body
unwrapped from ``{"error": {...}}``.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import random
import time
from dataclasses import dataclass
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp

INITIAL_RETRY_DELAY = 0.5
MAX_RETRY_DELAY = 8.0
MAX_RETRY_AFTER = 120.0  # a server asking for a longer wait is not retried
CONNECTION_LIMIT = 1000  # the SDK's; keep-alive connections expire after 5 s as in httpx
KEEPALIVE_SECONDS = 5.0


class RequestFailed(Exception):
    """A request that failed for good: ``kind`` is ``timeout``, ``connection`` or ``status``."""

    def __init__(self, kind: str, attempts: int, status_code: int = 0, body: object = None):
        super().__init__(kind if not status_code else f"HTTP {status_code}")
        self.kind = kind
        self.attempts = attempts
        self.status_code = status_code
        self.body = body  # the server's error, unwrapped from {"error": {...}} as the SDK does


@dataclass
class Answer:
    """A 2xx answer's bytes, its media type and the attempts it took."""

    data: bytes
    content_type: str
    attempts: int

    def json(self) -> object:
        """The body as JSON; like the SDK, a body that is not declared JSON is returned as text."""
        if not self.content_type.split(";")[0].endswith("json"):
            return self.data.decode("utf-8", "replace")
        return json.loads(self.data)


def chat_url(base_url: str) -> str:
    """``base_url`` + ``chat/completions``, joined as the SDK joins them (one slash added when missing)."""
    path, separator, query = base_url.partition("?")
    return path + ("" if path.endswith("/") else "/") + "chat/completions" + separator + query


class JsonPoster:
    """POSTs JSON to one URL with fixed headers; open and close it inside the event loop that uses it."""

    def __init__(self, url: str, headers: dict[str, str], *, timeout: float, max_retries: int):
        self.url = url
        self.headers = headers
        self.max_retries = max_retries
        # The SDK's timeout per attempt: to get a connection, to connect, and between two reads.
        self.timeout = aiohttp.ClientTimeout(connect=timeout, sock_connect=timeout, sock_read=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._proxy: str | None = None

    async def open(self) -> None:
        ssl = _ssl_context() if urlsplit(self.url).scheme == "https" else True
        connector = aiohttp.TCPConnector(limit=CONNECTION_LIMIT, keepalive_timeout=KEEPALIVE_SECONDS, ssl=ssl)
        # Proxies are looked up once here rather than by aiohttp's trust_env on every request
        # (a thread hop each); every request goes to the one URL.
        self._proxy = env_proxy(self.url)
        self._session = aiohttp.ClientSession(connector=connector, headers=self.headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(self, payload: bytes) -> Answer:
        """Send ``payload`` until it is answered with 2xx or the retries are spent (:class:`RequestFailed`)."""
        for retries_taken in range(self.max_retries + 1):
            last = retries_taken == self.max_retries
            try:
                status, headers, data, content_type, charset = await self._send(payload)
            except Exception as err:
                kind = transport_kind(err)
                if kind is None:
                    raise
                if last:
                    raise RequestFailed(kind, retries_taken + 1) from err
                await asyncio.sleep(retry_delay(retries_taken))
                continue
            if 200 <= status < 300:
                return Answer(data, content_type, retries_taken + 1)
            if not last and should_retry(status, headers):
                await asyncio.sleep(retry_delay(retries_taken, headers))
                continue
            raise RequestFailed("status", retries_taken + 1, status, error_body(data, charset))
        raise AssertionError("unreachable: the last attempt returns or raises")

    async def _send(self, payload: bytes) -> tuple:
        if self._session is None:
            raise RuntimeError("open the poster first")
        async with self._session.post(self.url, data=payload, timeout=self.timeout, proxy=self._proxy) as response:
            data = await response.read()
            content_type = response.headers.get("Content-Type", "*")
            return response.status, response.headers, data, content_type, response.charset


def transport_kind(err: BaseException) -> str | None:
    """``timeout`` or ``connection`` for a failure to get an answer; None for anything else (not retried).

    A connect that fails (refused, no route, unknown host, bad certificate) is ``connection``; the
    SDK's transport called every other dropped connection a timeout, and so does this.
    """
    if isinstance(err, (aiohttp.ClientConnectorError, ConnectionRefusedError)):
        return "connection"
    if isinstance(err, (asyncio.TimeoutError, aiohttp.ClientConnectionError)):
        return "timeout"
    broken = (aiohttp.ClientPayloadError, aiohttp.ClientHttpProxyError, aiohttp.TooManyRedirects, aiohttp.InvalidURL)
    return "connection" if isinstance(err, broken) else None


def should_retry(status: int, headers) -> bool:
    """Whether an error status is worth another try, as the SDK decides (``_should_retry``)."""
    wait = retry_after(headers)
    if wait is not None and math.isfinite(wait) and wait > MAX_RETRY_AFTER:
        return False
    told = headers.get("x-should-retry")
    if told in ("true", "false"):
        return told == "true"
    return status in (408, 409, 429) or status >= 500


def retry_delay(retries_taken: int, headers=None) -> float:
    """Seconds before the next try: what the server asks for (up to two minutes), else exponential backoff."""
    wait = retry_after(headers)
    if wait is not None and math.isfinite(wait) and 0 < wait <= MAX_RETRY_AFTER:
        return wait
    backoff = min(INITIAL_RETRY_DELAY * 2.0 ** min(retries_taken, 1000), MAX_RETRY_DELAY)
    return max(0.0, backoff * (1 - 0.25 * random.random()))


def retry_after(headers) -> float | None:
    """``retry-after-ms``, else ``retry-after`` in seconds or as an HTTP date; None when absent or unreadable."""
    if headers is None:
        return None
    for name, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            wait = float(value)
        except ValueError:
            continue
        if wait == math.inf and value.strip().lower() not in ("inf", "+inf", "infinity", "+infinity"):
            return MAX_RETRY_AFTER + 1  # an overflowing number is a long wait, not a malformed one
        return wait / divisor
    try:
        date = email.utils.parsedate_tz(headers.get("retry-after"))
        return None if date is None else float(email.utils.mktime_tz(date) - time.time())
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def error_body(data: bytes, charset: str | None) -> object:
    """The error body as the SDK keeps it: JSON when it parses, with ``{"error": X}`` unwrapped to X; else text."""
    try:
        text = data.decode(charset or "utf-8", "replace").strip()
    except LookupError:  # a charset Python does not know
        text = data.decode("utf-8", "replace").strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text
    return body.get("error", body) if isinstance(body, dict) else body


def env_proxy(url: str) -> str | None:
    """The proxy ``HTTPS_PROXY`` / ``HTTP_PROXY`` / ``ALL_PROXY`` name for ``url``, unless ``NO_PROXY`` exempts it."""
    parts = urlsplit(url)
    proxies = getproxies()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    return None if not proxy or proxy_bypass(parts.hostname or "") else proxy


def _ssl_context():
    """The SDK's certificates: ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` when set, else the system's."""
    import httpx2

    return httpx2.create_ssl_context()
