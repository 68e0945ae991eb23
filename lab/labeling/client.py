"""The API labeler: any OpenAI-compatible chat-completions endpoint with vision.

OpenAI, DashScope's compatible mode, a local vLLM or Ollama server all speak the same
protocol, so one client covers them; :func:`load_providers` fills in their base URLs
and model names. Images go inline as base64 data URLs, shrunk to a pixel budget first
because image tokens are most of the bill. Retries (429 with ``Retry-After``, 5xx,
timeouts) are the ``openai`` SDK's own, with exponential backoff.

The API key lives only in :class:`LabelerConfig` (kept out of its repr and of
:meth:`LabelerConfig.public_dict`) and in the SDK client; error messages that come back
from a server are scrubbed of it before they are shown or written anywhere.
"""

from __future__ import annotations

import base64
import io
import os
import time
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from urllib.parse import urlparse

from lab.errors import ConfigError, Text, localize
from lab.images import open_image
from lab.labeling.costs import Price, price_for
from lab.labeling.item import LabelFailure, Reply
from lab.paths import PRESETS_DIR, workspace
from lab.presets import IMAGE_TOKEN, check_keys, closest, load_yaml_strict

OPENAI_BASE_URL = "https://api.openai.com/v1"
PROVIDER_KEYS = ("title", "base_url", "models", "key_env", "needs_key")
IMAGE_FORMATS = ("jpeg", "png")
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "::1"}
# HTTP attempts made by the current labeling call (the SDK retries inside one call).
_ATTEMPTS: ContextVar[list[int] | None] = ContextVar("label_attempts", default=None)


@dataclass
class LabelerConfig:
    """How to reach a labeler model and how hard to push it."""

    model: str = ""  # empty: the provider's first model
    base_url: str = ""  # empty: the provider's, else $OPENAI_BASE_URL, else OpenAI
    api_key: str = field(default="", repr=False)  # empty: the provider's key_env, else $OPENAI_API_KEY
    provider: str = ""  # a name from presets/providers.yaml, or empty
    temperature: float = 0.0
    max_tokens: int = 1024
    json_mode: bool = False  # ask the server for response_format json_object
    max_pixels: int = 768 * 768  # images are shrunk to this many pixels before sending
    image_format: str = "jpeg"  # how shrunk images are encoded: jpeg (smaller) or png (lossless)
    concurrency: int = 8  # requests in flight at once
    max_retries: int = 3  # retries per request on 429, 5xx, timeouts and dropped connections
    timeout: float = 60.0  # seconds per request attempt
    reask: bool = False  # ask once more when a JSON answer is invalid

    def __post_init__(self):
        if self.concurrency < 1:
            raise ConfigError(f"Concurrency must be at least 1, not {self.concurrency}.",
                              zh=f"并发数至少为 1，当前为 {self.concurrency}。")
        if self.max_retries < 0:
            raise ConfigError(f"Max retries cannot be negative ({self.max_retries}).",
                              zh=f"最大重试次数不能为负数（当前为 {self.max_retries}）。")
        if self.timeout <= 0:
            raise ConfigError(f"The request timeout must be positive, not {self.timeout}.",
                              zh=f"请求超时必须大于 0，当前为 {self.timeout}。")
        if self.max_tokens < 1:
            raise ConfigError(f"Max tokens must be at least 1, not {self.max_tokens}.",
                              zh=f"最大 token 数至少为 1，当前为 {self.max_tokens}。")
        if self.max_pixels < 28 * 28:
            raise ConfigError(f"The pixel budget {self.max_pixels} is too small; use at least 784 (28x28).",
                              zh=f"像素上限 {self.max_pixels} 太小，请至少设为 784（28x28）。")
        if not 0 <= self.temperature <= 2:
            raise ConfigError(f"Temperature must be between 0 and 2, not {self.temperature}.",
                              zh=f"温度必须在 0 到 2 之间，当前为 {self.temperature}。")
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError(f"Image format must be jpeg or png, not '{self.image_format}'.",
                              zh=f"图片格式只能是 jpeg 或 png，不能是 '{self.image_format}'。")

    def public_dict(self) -> dict:
        """Every setting except the API key: safe to save next to a dataset or show."""
        data = asdict(self)
        data.pop("api_key")
        return data

    def resolved(self) -> "LabelerConfig":
        """Base URL, model and key filled in from the provider and the environment; no key is a ConfigError."""
        provider = load_providers().get(self.provider) if self.provider else None
        if self.provider and provider is None:
            hint = closest(self.provider, load_providers())
            raise ConfigError(f"Unknown provider '{self.provider}'{hint}.",
                              zh=f"未知的服务商 '{self.provider}'{localize(hint, 'zh')}。")
        base_url = self.base_url or (provider or {}).get("base_url") or os.environ.get("OPENAI_BASE_URL") or OPENAI_BASE_URL
        model = self.model or ((provider or {}).get("models") or [""])[0]
        if not model:
            raise ConfigError("No labeler model given; pick a provider or type a model name (for example gpt-4o-mini).",
                              zh="没有指定标注模型；请选择一个服务商，或填写模型名称（例如 gpt-4o-mini）。")
        key = self.api_key or _key_from_env(provider)
        if not key and needs_key(base_url, provider):
            sentence = missing_key_sentence(provider)
            raise ConfigError(sentence, zh=sentence.zh)
        return replace(self, base_url=base_url, model=model, api_key=key or "EMPTY")


def _key_from_env(provider: dict | None) -> str:
    names = [provider.get("key_env")] if provider and provider.get("key_env") else []
    for name in [*names, "OPENAI_API_KEY"]:
        if os.environ.get(name):
            return os.environ[name]
    return ""


def needs_key(base_url: str, provider: dict | None = None) -> bool:
    """Whether a server wants a real key (local servers accept any)."""
    if provider is not None and not provider.get("needs_key", True):
        return False
    return (urlparse(base_url).hostname or "") not in _LOCAL_HOSTS


def missing_key_sentence(provider: dict | None = None) -> Text:
    """What to do when there is no key: where to type it, which variable to set, or go local."""
    env = provider.get("key_env") if provider and provider.get("key_env") else "OPENAI_API_KEY"
    return Text(f"No API key: set {env} in the environment (in the app you may also type it into the API key box), "
                "or label with a local model instead (the loaded model in the app, --local-model on the command line).",
                f"没有 API 密钥：请在环境变量中设置 {env}（在应用里也可以填进 API Key 输入框），"
                "或改用本地模型标注（应用中已加载的模型，命令行用 --local-model）。")


def load_providers() -> dict[str, dict]:
    """Provider presets: ``presets/providers.yaml`` with the workspace's file laid over it."""
    providers: dict[str, dict] = {}
    for path in (PRESETS_DIR / "providers.yaml", workspace() / "presets" / "providers.yaml"):
        if not path.is_file():
            continue
        entries = load_yaml_strict(path, ("providers",)).get("providers") or {}
        for name, entry in entries.items():
            if not isinstance(entry, dict) or not entry.get("base_url"):
                raise ConfigError(f"Provider '{name}' in {path} needs at least a base_url.",
                                  zh=f"{path} 中的服务商 '{name}' 至少需要填写 base_url。")
            check_keys(entry, PROVIDER_KEYS, f"provider '{name}' in {path}")
            providers[str(name)] = {"title": str(name), "models": [], "needs_key": True, **entry}
    return providers


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


def build_messages(system: str, user: str, image_urls: list[str], history: list[tuple[str, str]] = ()) -> list[dict]:
    """Chat-completions messages: ``<image>`` in ``user`` marks where pictures go (else they come first)."""
    messages: list[dict] = [{"role": "system", "content": system}] if system.strip() else []
    chunks = user.split(IMAGE_TOKEN)
    if len(chunks) == 1:
        chunks = [""] * len(image_urls) + chunks
    parts: list[dict] = []
    urls = iter(image_urls)
    for i, chunk in enumerate(chunks):
        if i > 0:
            url = next(urls, None)
            if url:
                parts.append({"type": "image_url", "image_url": {"url": url}})
        if chunk.strip():
            parts.append({"type": "text", "text": chunk})
    messages.append({"role": "user", "content": parts})
    for answer, follow_up in history:
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": follow_up}]
    return messages


class ApiLabeler:
    """A labeler behind an OpenAI-compatible API; use as ``async with ApiLabeler(config) as labeler``."""

    def __init__(self, config: LabelerConfig, price: Price | None = None):
        self.config = config.resolved()
        self.name = self.config.model
        self.concurrency = self.config.concurrency
        self.reask = self.config.reask
        self.price = price if price is not None else price_for(self.name)
        self._client = None

    async def __aenter__(self) -> "ApiLabeler":
        from openai import AsyncOpenAI, DefaultAsyncHttpxClient

        # The SDK's connection pool belongs to the event loop it first runs in, so the
        # client is made here, inside the run's loop, and closed when the run ends.
        http = DefaultAsyncHttpxClient(event_hooks={"request": [_count_attempt]})
        self._client = AsyncOpenAI(api_key=self.config.api_key, base_url=self.config.base_url, http_client=http,
                                   timeout=self.config.timeout, max_retries=self.config.max_retries)
        return self

    async def __aexit__(self, *exc) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None

    def prepare(self, path: Path) -> str:
        """The image as a data URL (runs in a worker thread); raises BadImageError."""
        return encode_image(path, self.config.max_pixels, self.config.image_format)

    def _request(self, messages: list[dict]) -> dict:
        cfg = self.config
        request: dict = {"model": cfg.model, "messages": messages, "temperature": cfg.temperature}
        # OpenAI's newer models refuse max_tokens; other servers may not know its successor.
        limit_key = "max_completion_tokens" if urlparse(cfg.base_url).hostname == "api.openai.com" else "max_tokens"
        request[limit_key] = cfg.max_tokens
        if cfg.json_mode:
            request["response_format"] = {"type": "json_object"}
        return request

    async def ask(self, prepared: str, system: str, user: str, history: list[tuple[str, str]] = ()) -> Reply:
        """Ask about one prepared image; raises LabelFailure once the SDK's retries are spent."""
        from openai.types.chat import ChatCompletion

        if self._client is None:
            raise RuntimeError("use the labeler inside 'async with'")
        request = self._request(build_messages(system, user, [prepared], history))
        attempts = [0]
        _ATTEMPTS.set(attempts)  # each worker is its own task, so this counter is this call's
        start = time.perf_counter()
        try:
            # post() rather than chat.completions.create(): the same request, retries and
            # errors, without re-typing every message part first, which costs about a
            # millisecond of CPU per request and caps throughput at high concurrency.
            completion = await self._client.post("/chat/completions", cast_to=ChatCompletion, body=request)
            choice = completion.choices[0]
            text, usage = choice.message.content or "", completion.usage
        except Exception as err:  # every way a request can fail becomes a recorded reason
            raise self._failure(err, attempts[0]) from None
        retries = max(0, attempts[0] - 1)
        return Reply(
            text=text,
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            seconds=time.perf_counter() - start,
            retries=retries,
            finish_reason=choice.finish_reason,
            refusal=getattr(choice.message, "refusal", None),
        )

    def _failure(self, err: Exception, attempts: int) -> LabelFailure:
        import openai

        tries, timeout, url = max(1, attempts), self.config.timeout, self.config.base_url
        if isinstance(err, openai.APITimeoutError):
            kind, reason = "timeout", Text(f"timed out after {timeout:g} s ({tries} tries)",
                                           f"{timeout:g} 秒后超时（共尝试 {tries} 次）")
        elif isinstance(err, openai.APIStatusError):
            kind, reason = f"http_{err.status_code}", _status_reason(err, tries)
        elif isinstance(err, openai.APIConnectionError):
            kind, reason = "connection", Text(f"cannot reach {url} ({tries} tries)", f"无法连接 {url}（共尝试 {tries} 次）")
        else:
            kind, reason = "malformed", Text(f"malformed response from the server ({type(err).__name__})",
                                             f"服务端返回的响应格式有误（{type(err).__name__}）")
        return LabelFailure(kind, self._scrub(reason), tries - 1)

    def _scrub(self, text: Text) -> Text:
        key = self.config.api_key
        if not key or key == "EMPTY":
            return text
        return Text(f"{text}".replace(key, "***"), localize(text, "zh").replace(key, "***"))


async def _count_attempt(request) -> None:
    """httpx request hook: runs in the calling task, so it sees that call's counter."""
    counter = _ATTEMPTS.get()
    if counter is not None:
        counter[0] += 1


def _status_reason(err, tries: int) -> Text:
    status = err.status_code
    body = getattr(err, "body", None)  # the SDK has already unwrapped {"error": {...}}
    detail = body.get("message") if isinstance(body, dict) else body
    detail = str(detail or "").strip()[:200]  # the server's own words, shown as they are in both languages
    if status == 401:
        return Text(f"the server refused the API key (HTTP 401): {detail or 'no details'}",
                    f"服务端拒绝了 API 密钥（HTTP 401）：{detail or '无详细信息'}")
    if status == 429:
        return Text(f"rate limited (HTTP 429) after {tries} tries: {detail or 'no details'}",
                    f"请求被限流（HTTP 429），已尝试 {tries} 次：{detail or '无详细信息'}")
    if status >= 500:
        return Text(f"server error (HTTP {status}) after {tries} tries: {detail or 'no details'}",
                    f"服务端出错（HTTP {status}），已尝试 {tries} 次：{detail or '无详细信息'}")
    return Text(f"request refused (HTTP {status}): {detail or 'no details'}",
                f"请求被拒绝（HTTP {status}）：{detail or '无详细信息'}")
