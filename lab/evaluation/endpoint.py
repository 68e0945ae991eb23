"""Score any OpenAI-compatible chat endpoint with the same samples and metrics as the local model.

A merged model served by ``vllm serve``, or the labeler itself (an upper bound for what
fine-tuning on its answers can reach), answers each sample through
:mod:`lab.endpoint_client` (the labeler's client: same messages, retries, errors and key
rule); the results are saved and shown like a local evaluation, with one variant named
``endpoint``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from lab import paths
from lab.endpoint_client import ChatClient, EndpointError, chat_messages, encode_image
from lab.endpoint_keys import Endpoint, resolve_endpoint
from lab.errors import BadImageError, ConfigError, LabError
from lab.evaluation.runner import (
    EvalResult,
    EvalSample,
    ProgressFn,
    _default_name,
    for_model,
    save_result,
    score_variants,
    skip_row,
)
from lab.settings import check, public_dict, setting
from lab.text import Msg

VARIANT = "endpoint"


@dataclass
class EndpointConfig:
    """Where the endpoint is and how to ask it."""

    base_url: str = setting("http://localhost:8000/v1", label="Base URL", context="endpoint", cli=False)
    """The server's ``/v1`` URL, e.g. ``http://localhost:8000/v1``."""
    model: str = setting("", label="Model name on the server", cli=False)
    """The model name the server knows (for ``vllm serve DIR`` it is DIR unless ``--served-model-name``)."""
    api_key: str | None = setting(
        None, label="API key (empty: OPENAI_API_KEY or EMPTY)", secret=True, widget="password"
    )
    """None: a key from the environment if this URL is the one it was set up for, ``EMPTY`` for a local server."""
    concurrency: int = setting(4, label="Concurrent requests", min=1, widget="slider", ui_max=32)
    """Requests in flight at once."""
    max_new_tokens: int = setting(256, label="Max new tokens", min=1, old_names=("max_tokens",))
    """Longest answer in tokens."""
    temperature: float = setting(0.0, label="Temperature", min=0)
    """0 asks for greedy answers."""
    timeout: float = setting(120.0, label="Timeout per request (s)", above=0)
    """Seconds to wait for one answer."""
    max_retries: int = setting(2, label="Retries per request", min=0)
    """Retries per request on 429, 5xx, timeouts and dropped connections."""
    max_pixels: int = setting(1003520, label="Pixel budget per image", min=28 * 28)
    """Images are shrunk to at most this many pixels before they are sent."""

    def __post_init__(self):
        check(self)
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(
                "The endpoint URL must start with http:// or https:// (got {base_url!r}).", base_url=self.base_url
            )
        if not self.model.strip():
            raise ConfigError("Name the model the endpoint serves (for vLLM, the folder or --served-model-name).")

    def public_dict(self) -> dict:
        """The settings without the API key, for the saved summary."""
        return public_dict(self)

    def endpoint(self) -> Endpoint:
        """The URL, model and key to use; a ConfigError when no key may be sent to this URL."""
        return resolve_endpoint(base_url=self.base_url, model=self.model, api_key=self.api_key or "")


def openai_messages(sample: EvalSample, max_pixels: int) -> list[dict]:
    """The sample's messages with each ``<image>`` replaced by an inline image part, in order."""
    urls = [encode_image(Path(image), max_pixels, "png") for image in sample.images]
    return chat_messages(sample.messages, urls)


async def _answer_all(client: ChatClient, config: EndpointConfig, samples: list[EvalSample], progress, stop):
    """``({index: answer}, skipped)``; an error that makes the server unusable stops sending and is raised."""
    answers: dict[int, str] = {}
    skipped: list[dict] = []
    gate = asyncio.Semaphore(config.concurrency)
    start = time.perf_counter()

    async def one(index: int) -> None:
        async with gate:
            if stop is not None and stop.is_set():
                return
            sample = samples[index]
            try:
                if sample.videos:
                    raise BadImageError(sample.videos[0], Msg("videos are not sent to endpoints"))
                messages = await asyncio.to_thread(openai_messages, sample, config.max_pixels)
                body = client.request(messages, max_new_tokens=config.max_new_tokens, temperature=config.temperature)
                answers[index] = (await client.complete(body)).text.strip()
            except BadImageError as err:
                skipped.append(skip_row(sample.id, err))
            except EndpointError as err:
                if err.fatal:
                    raise LabError("Evaluation stopped: {reason}.", reason=err.reason) from None
                skipped.append(skip_row(sample.id, err))
        if progress is not None:
            done = len(answers) + len(skipped)
            progress(done, len(samples), (time.perf_counter() - start) / done * (len(samples) - done))

    async with client:
        tasks = [asyncio.ensure_future(one(i)) for i in range(len(samples))]
        try:
            await asyncio.gather(*tasks)
        finally:  # after a fatal error, the requests not yet sent are not sent
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    return answers, skipped


def evaluate_endpoint(
    samples: list[EvalSample],
    config: EndpointConfig,
    *,
    name: str | None = None,
    source: str = "",
    limit: int | None = None,
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    out_dir: str | Path | None = None,
) -> EvalResult:
    """Answer ``samples`` through the endpoint, score them, save the results and return them.

    A server that cannot be reached (or refuses the key, or does not know the model) is one
    clear error; a sample the server fails on is skipped with its reason.
    """
    samples = samples[: int(limit)] if limit else samples
    if not samples:
        raise ConfigError("There are no samples to evaluate.")
    samples = [for_model(s) for s in samples]  # boxes as plain JSON on the 0-1000 grid
    client = ChatClient(config.endpoint(), timeout=config.timeout, max_retries=config.max_retries)
    start = time.perf_counter()
    answers, skipped = asyncio.run(_answer_all(client, config, samples, progress, stop))
    order = sorted(answers)
    scored = score_variants([samples[i] for i in order], {VARIANT: [answers[i] for i in order]}, [VARIANT])
    result = EvalResult(
        name=name or _default_name(source) + "-endpoint",
        source=source,
        total=len(samples),
        stopped=len(answers) + len(skipped) < len(samples),
        seconds=round(time.perf_counter() - start, 3),
        skipped=skipped,
        settings=config.public_dict(),
        model={"name": config.model, "endpoint": config.base_url},
        **scored,
    )
    save_result(result, Path(out_dir) if out_dir else paths.workspace() / "eval")
    return result
