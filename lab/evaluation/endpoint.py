"""Score any OpenAI-compatible chat endpoint with the same samples and metrics as the local model.

A merged model served by ``vllm serve``, or the labeler itself (an upper bound for what
fine-tuning on its answers can reach), answers each sample through the ``openai``
client; the results are saved and shown like a local evaluation, with one variant
named ``endpoint``.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from lab import paths
from lab.conversation import IMAGE_PLACEHOLDER
from lab.errors import BadImageError, ConfigError, LabError, Text, localize
from lab.evaluation.runner import (EvalResult, EvalSample, ProgressFn, _default_name, save_result, score_variants,
                                  skip_row)

VARIANT = "endpoint"


@dataclass
class EndpointConfig:
    """Where the endpoint is and how to ask it."""

    base_url: str
    """The server's ``/v1`` URL, e.g. ``http://localhost:8000/v1``."""
    model: str
    """The model name the server knows (for ``vllm serve DIR`` it is DIR unless ``--served-model-name``)."""
    api_key: str | None = None
    """None takes ``OPENAI_API_KEY`` from the environment, else ``EMPTY`` (what local servers accept)."""
    concurrency: int = 4
    """Requests in flight at once."""
    max_tokens: int = 256
    """Longest answer in tokens."""
    temperature: float = 0.0
    """0 asks for greedy answers."""
    timeout: float = 120.0
    """Seconds to wait for one answer."""
    max_pixels: int = 1003520
    """Images are shrunk to at most this many pixels before they are sent."""

    def __post_init__(self):
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"The endpoint URL must start with http:// or https:// (got {self.base_url!r}).",
                              zh=f"接口地址必须以 http:// 或 https:// 开头（当前为 {self.base_url!r}）。")
        if not self.model.strip():
            raise ConfigError("Name the model the endpoint serves (for vLLM, the folder or --served-model-name).",
                              zh="请填写接口所部署的模型名称（vLLM 下为模型文件夹或 --served-model-name）。")
        if int(self.concurrency) < 1:
            raise ConfigError(f"Concurrency must be at least 1, not {self.concurrency}.",
                              zh=f"并发数至少为 1，当前为 {self.concurrency}。")

    def public_dict(self) -> dict:
        """The settings without the API key, for the saved summary."""
        return {k: v for k, v in asdict(self).items() if k != "api_key"}


def openai_messages(sample: EvalSample, max_pixels: int) -> list[dict]:
    """The sample's messages with each ``<image>`` replaced by an inline image part, in order."""
    from lab.labeling.client import encode_image

    images = iter(sample.images)
    converted = []
    for message in sample.messages:
        content = message["content"]
        if not isinstance(content, str) or IMAGE_PLACEHOLDER not in content:
            converted.append({"role": message["role"], "content": content})
            continue
        parts = []
        for i, chunk in enumerate(content.split(IMAGE_PLACEHOLDER)):
            if i > 0:
                url = encode_image(Path(next(images)), max_pixels, "png")
                parts.append({"type": "image_url", "image_url": {"url": url}})
            if chunk:
                parts.append({"type": "text", "text": chunk})
        converted.append({"role": message["role"], "content": parts})
    return converted


def _client(config: EndpointConfig):
    from openai import OpenAI

    key = config.api_key or os.environ.get("OPENAI_API_KEY") or "EMPTY"
    return OpenAI(base_url=config.base_url, api_key=key, timeout=config.timeout, max_retries=2)


def _ask(client, config: EndpointConfig, sample: EvalSample) -> str:
    import openai

    try:
        reply = client.chat.completions.create(
            model=config.model, messages=openai_messages(sample, config.max_pixels),
            max_tokens=int(config.max_tokens), temperature=float(config.temperature),
        )  # fmt: skip
    except openai.APIConnectionError:
        raise LabError(f"Cannot reach the endpoint at {config.base_url}; is the server running?",
                       zh=f"无法连接接口 {config.base_url}；服务是否已启动？") from None
    except openai.AuthenticationError:
        raise LabError(f"The endpoint at {config.base_url} refused the API key.",
                       zh=f"接口 {config.base_url} 拒绝了 API 密钥。") from None
    except openai.NotFoundError:
        raise LabError(f"The endpoint at {config.base_url} does not serve a model named {config.model!r}.",
                       zh=f"接口 {config.base_url} 上没有名为 {config.model!r} 的模型。") from None
    except openai.APIStatusError as err:
        raise _SampleFailure(Text(f"the server answered HTTP {err.status_code}",
                                  f"服务端返回 HTTP {err.status_code}")) from None
    return (reply.choices[0].message.content or "").strip() if reply.choices else ""


class _SampleFailure(Exception):
    """One sample could not be answered; the run goes on."""

    def __init__(self, reason: Text):
        super().__init__(reason)
        self.zh = localize(reason, "zh")


def _answer_concurrently(client, config: EndpointConfig, samples: list[EvalSample], progress, stop):
    """``({index: answer}, skipped)``; a LabError (server unusable) stops sending and is raised."""
    answers: dict[int, str] = {}
    skipped: list[dict] = []
    lock, halt = threading.Lock(), threading.Event()
    start = time.perf_counter()

    def one(index: int) -> None:
        if halt.is_set() or (stop is not None and stop.is_set()):
            return
        try:
            text = _ask(client, config, samples[index])
            with lock:
                answers[index] = text
        except (_SampleFailure, BadImageError) as err:
            with lock:
                skipped.append(skip_row(samples[index].id, err))
        except LabError:
            halt.set()  # the server is unusable: do not send the remaining requests
            raise
        if progress is not None:
            with lock:
                done = len(answers) + len(skipped)
            progress(done, len(samples), (time.perf_counter() - start) / done * (len(samples) - done))

    with ThreadPoolExecutor(max_workers=int(config.concurrency)) as pool:
        for future in [pool.submit(one, i) for i in range(len(samples))]:
            future.result()
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
        raise ConfigError("There are no samples to evaluate.", zh="没有可评估的样本。")
    start = time.perf_counter()
    answers, skipped = _answer_concurrently(_client(config), config, samples, progress, stop)
    order = sorted(answers)
    scored = score_variants([samples[i] for i in order], {VARIANT: [answers[i] for i in order]}, [VARIANT])
    result = EvalResult(
        name=name or _default_name(source) + "-endpoint", source=source, total=len(samples),
        stopped=len(answers) + len(skipped) < len(samples), seconds=round(time.perf_counter() - start, 3),
        skipped=skipped, settings=config.public_dict(), model={"name": config.model, "endpoint": config.base_url},
        **scored,
    )  # fmt: skip
    save_result(result, Path(out_dir) if out_dir else paths.workspace() / "eval")
    return result
