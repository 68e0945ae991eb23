"""A scriptable OpenAI chat-completions server on 127.0.0.1, for tests and the benchmark.

Real HTTP (uvicorn + starlette), so the real ``openai`` client, its retries and its
timeouts are exercised. Each request takes the next scripted :class:`Reply`; when the
script is empty the ``responder`` answers (by default a label derived from the image,
so a test can check that every answer landed on the right image)::

    with FakeOpenAI() as server:
        server.script(rate_limited(0.2), answer("a cat"))
        ...  # point a labeler at server.base_url

The server counts requests in flight (``max_in_flight``) and records each one it got
(URL, headers, JSON body) unless ``record=False``.

Run it alone for the benchmark: ``python tests/fake_openai.py --latency 0.2`` prints
its base URL on the first line and serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route


@dataclass
class Reply:
    """What the server does with one request."""

    status: int = 200
    text: str | None = "ok"
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering, on top of the server's latency
    body: str | None = None  # a raw body instead of a completion (malformed responses)
    refusal: str | None = None
    finish_reason: str = "stop"
    prompt_tokens: int | None = None  # None: derived from the request size
    completion_tokens: int | None = None  # None: one per word of the answer


def answer(text: str, **kwargs) -> Reply:
    return Reply(text=text, **kwargs)


def json_answer(obj: Any, fenced: bool = False, **kwargs) -> Reply:
    text = json.dumps(obj, ensure_ascii=False)
    return Reply(text=f"```json\n{text}\n```" if fenced else text, **kwargs)


def rate_limited(retry_after: float = 0.2, header: str = "retry-after") -> Reply:
    value = str(int(retry_after * 1000)) if header == "retry-after-ms" else f"{retry_after:g}"
    return Reply(
        status=429,
        headers={header: value},
        body=json.dumps({"error": {"message": "Rate limit reached", "type": "rate_limit"}}),
    )


def server_error(status: int = 500) -> Reply:
    return Reply(
        status=status, body=json.dumps({"error": {"message": "The server had an error", "type": "server_error"}})
    )


def slow(seconds: float, then: Reply | None = None) -> Reply:
    reply = then or answer("too late")
    reply.delay = seconds
    return reply


def malformed(body: str = '{"id": "x", "choices": [') -> Reply:
    return Reply(body=body)


def refusal(text: str = "I'm sorry, but I can't help with that request.", field_: bool = True) -> Reply:
    """A refusal: in the API's ``refusal`` field (content empty), or as plain answer text."""
    return Reply(text=None, refusal=text) if field_ else Reply(text=text)


def image_label(body: dict) -> str:
    """The default answer: names the first image by a hash of its data URL."""
    return f"label-{image_digest(body)}"


def image_digest(body: dict) -> str:
    for message in body.get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else []:
            if part.get("type") == "image_url":
                return hashlib.sha256(part["image_url"]["url"].encode()).hexdigest()[:12]
    return "none"


class FakeOpenAI:
    """The server; ``start()``/``stop()`` or use as a context manager."""

    def __init__(
        self, latency: float = 0.0, record: bool = True, responder: Callable[[dict], Reply] | None = None, port: int = 0
    ):
        self.latency = latency
        self.record = record
        self.responder = responder or (lambda body: answer(image_label(body)))
        self.requests: list[dict] = []
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        # proto=IPPROTO_TCP matters: asyncio turns Nagle off (TCP_NODELAY) only on sockets that
        # say they are TCP, and with Nagle on every keep-alive response waits ~40 ms for an ACK.
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", port))
        self.port = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        app = Starlette(routes=[Route("/v1/chat/completions", self._handle, methods=["POST"])])
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30, backlog=2048
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def script(self, *replies: Reply) -> FakeOpenAI:
        """Queue replies for the next requests, in arrival order."""
        with self._lock:
            self._script.extend(replies)
        return self

    def reset(self) -> None:
        with self._lock:
            self._script.clear()
            self.requests.clear()
            self.count = self.in_flight = self.max_in_flight = 0

    def start(self) -> FakeOpenAI:
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the fake OpenAI server did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._socket.close()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _next(self, body: dict) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return self.responder(body)

    async def _handle(self, request: Request) -> Response:
        raw = await request.body()
        with self._lock:
            self.count += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            body = json.loads(raw)
            if self.record:
                with self._lock:
                    self.requests.append(
                        {
                            "url": str(request.url),
                            "headers": dict(request.headers),
                            "body": body,
                            "time": time.monotonic(),
                        }
                    )
            reply = self._next(body)
            if self.latency or reply.delay:
                await asyncio.sleep(self.latency + reply.delay)
            return _response(reply, body, len(raw))
        finally:
            with self._lock:
                self.in_flight -= 1


def _response(reply: Reply, body: dict, size: int) -> Response:
    if reply.body is not None:
        return Response(reply.body, status_code=reply.status, headers=reply.headers, media_type="application/json")
    text = reply.text
    prompt_tokens = reply.prompt_tokens if reply.prompt_tokens is not None else 20 + size // 1000
    completion_tokens = (
        reply.completion_tokens if reply.completion_tokens is not None else len(re.findall(r"\S+", text or ""))
    )
    message = {"role": "assistant", "content": text, "refusal": reply.refusal}
    payload = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "fake"),
        "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason, "logprobs": None}],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    return JSONResponse(payload, status_code=reply.status, headers=reply.headers)


def main() -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI chat-completions server for tests and benchmarks.")
    parser.add_argument("--latency", type=float, default=0.2, help="seconds every request takes")
    parser.add_argument("--port", type=int, default=0, help="port (default: a free one)")
    args = parser.parse_args()
    server = FakeOpenAI(latency=args.latency, record=False, port=args.port).start()
    print(server.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
