"""The API labeler: any OpenAI-compatible chat-completions endpoint with vision.

Talking to the endpoint (provider presets, which key goes where, images as data URLs
shrunk to a pixel budget because image tokens are most of the bill, the SDK's retries,
errors as one reason with the key scrubbed) is :mod:`lab.endpoint_client`'s; this module
holds the labeler's settings and fits the client to the :class:`~lab.labeling.item.Labeler`
protocol that the preview and the batch run use.

The API key lives only in :class:`LabelerConfig` (kept out of its repr and of
:meth:`LabelerConfig.public_dict`) and in the client's request headers.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from lab.endpoint_client import IMAGE_FORMATS, ChatClient, EndpointError, build_messages, encode_image
from lab.endpoint_keys import Endpoint, load_providers, resolve_endpoint
from lab.labeling.costs import Price, price_for
from lab.labeling.item import LabelFailure, Reply
from lab.settings import check, public_dict, setting

__all__ = ["ApiLabeler", "LabelerConfig", "build_messages", "encode_image", "load_providers"]


@dataclass
class LabelerConfig:
    """How to reach a labeler model and how hard to push it."""

    model: str = setting("", label="Model", widget="dropdown")
    """Labeler model name; empty: the provider's first."""
    base_url: str = setting("", label="Base URL", flags=("--base-url", "--base_url"))
    """API base URL; empty: the provider's, else $OPENAI_BASE_URL, else OpenAI."""
    api_key: str = setting("", label="API key (kept in this page only)", secret=True, widget="password")
    """Empty: a key from the environment, sent only to the URL it was set up for."""
    provider: str = setting("", label="Provider", widget="dropdown")
    """Provider preset from presets/providers.yaml (openai, dashscope, vllm, ollama): fills base URL and model."""
    temperature: float = setting(0.0, label="Temperature", min=0, max=2, widget="slider", step=0.1)
    """Sampling temperature; 0 gives the likeliest answer."""
    max_new_tokens: int = setting(
        1024, label="Max answer tokens", min=1, flags=("--max-new-tokens", "--max-tokens"), old_names=("max_tokens",)
    )
    """Longest answer in tokens."""
    json_mode: bool = setting(False, label="Ask the server for JSON (response_format)")
    """Ask the server for a JSON object (response_format json_object)."""
    max_pixels: int = setting(768 * 768, label="Pixel budget per image", min=28 * 28)
    """Images are shrunk to this many pixels before they are sent (image tokens are most of the bill)."""
    image_format: str = setting("jpeg", label="Image format", choices=IMAGE_FORMATS)
    """How shrunk images are sent: jpeg (smaller) or png (lossless)."""
    concurrency: int = setting(8, label="Requests at once", min=1)
    """Requests in flight at once."""
    max_retries: int = setting(3, label="Retries per request", min=0, flags=("--max-retries", "--max_retries"))
    """Retries per request on 429, 5xx, timeouts and dropped connections."""
    timeout: float = setting(60.0, label="Timeout per request (s)", above=0)
    """Seconds per request attempt."""
    reask: bool = setting(False, label="Ask again once if the JSON is invalid")
    """Ask once more when a JSON answer is invalid."""

    def __post_init__(self):
        check(self)

    def public_dict(self) -> dict:
        """Every setting except the API key: safe to save next to a dataset or show."""
        return public_dict(self)

    def resolved(self, need_key: bool = True) -> LabelerConfig:
        """Base URL, model and key filled in from the provider and the environment (:func:`resolve_endpoint`).

        No key that may be sent to the URL is a ConfigError; ``need_key=False`` (an estimate) skips the key.
        """
        endpoint = resolve_endpoint(self.provider, self.base_url, self.model, self.api_key, need_key=need_key)
        return replace(self, base_url=endpoint.base_url, model=endpoint.model, api_key=endpoint.api_key)


class ApiLabeler:
    """A labeler behind an OpenAI-compatible API; use as ``async with ApiLabeler(config) as labeler``."""

    def __init__(self, config: LabelerConfig, price: Price | None = None):
        self.config = config.resolved()
        self.name = self.config.model
        self.concurrency = self.config.concurrency
        self.reask = self.config.reask
        self.price = price if price is not None else price_for(self.name)
        endpoint = Endpoint(self.config.base_url, self.config.model, self.config.api_key)
        self._client = ChatClient(endpoint, timeout=self.config.timeout, max_retries=self.config.max_retries)

    async def __aenter__(self) -> ApiLabeler:
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._client.__aexit__(*exc)

    def prepare(self, path: Path) -> str:
        """The image as a data URL (runs in a worker thread); raises BadImageError."""
        return encode_image(path, self.config.max_pixels, self.config.image_format)

    async def ask(self, prepared: str, system: str, user: str, history: list[tuple[str, str]] = ()) -> Reply:
        """Ask about one prepared image; raises LabelFailure once the retries are spent."""
        cfg = self.config
        body = self._client.request(
            build_messages(system, user, [prepared], history),
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            json_mode=cfg.json_mode,
        )
        try:
            completion = await self._client.complete(body)
        except EndpointError as err:
            raise LabelFailure(err.kind, err.reason, err.retries) from None
        return Reply(**asdict(completion))
