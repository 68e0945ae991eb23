"""The API labeler: any OpenAI-compatible chat-completions endpoint with vision.

Talking to the endpoint (provider presets, which key goes where, images as data URLs
shrunk to a pixel budget because image tokens are most of the bill, the SDK's retries,
errors as one reason with the key scrubbed) is :mod:`lab.endpoint_client`'s; this module
holds the labeler's settings and fits the client to the :class:`~lab.labeling.item.Labeler`
protocol that the preview and the batch run use.

The API key lives only in :class:`LabelerConfig` (kept out of its repr and of
:meth:`LabelerConfig.public_dict`) and in the SDK client.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from lab.endpoint_client import (IMAGE_FORMATS, ChatClient, Endpoint, EndpointError, build_messages, encode_image,
                                 load_providers, resolve_endpoint)
from lab.errors import ConfigError
from lab.labeling.costs import Price, price_for
from lab.labeling.item import LabelFailure, Reply

__all__ = ["ApiLabeler", "LabelerConfig", "build_messages", "encode_image", "load_providers"]


@dataclass
class LabelerConfig:
    """How to reach a labeler model and how hard to push it."""

    model: str = ""  # empty: the provider's first model
    base_url: str = ""  # empty: the provider's, else $OPENAI_BASE_URL, else OpenAI
    api_key: str = field(default="", repr=False)  # empty: a key from the environment, sent only to its own URL
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
            raise ConfigError("Concurrency must be at least 1, not {concurrency}.", concurrency=self.concurrency)
        if self.max_retries < 0:
            raise ConfigError("Max retries cannot be negative ({max_retries}).", max_retries=self.max_retries)
        if self.timeout <= 0:
            raise ConfigError("The request timeout must be positive, not {timeout}.", timeout=self.timeout)
        if self.max_tokens < 1:
            raise ConfigError("Max tokens must be at least 1, not {max_tokens}.", max_tokens=self.max_tokens)
        if self.max_pixels < 28 * 28:
            raise ConfigError("The pixel budget {max_pixels} is too small; use at least 784 (28x28).",
                              max_pixels=self.max_pixels)
        if not 0 <= self.temperature <= 2:
            raise ConfigError("Temperature must be between 0 and 2, not {temperature}.", temperature=self.temperature)
        if self.image_format not in IMAGE_FORMATS:
            raise ConfigError("Image format must be jpeg or png, not '{image_format}'.", image_format=self.image_format)

    def public_dict(self) -> dict:
        """Every setting except the API key: safe to save next to a dataset or show."""
        data = asdict(self)
        data.pop("api_key")
        return data

    def resolved(self, need_key: bool = True) -> "LabelerConfig":
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

    async def __aenter__(self) -> "ApiLabeler":
        await self._client.__aenter__()
        return self

    async def __aexit__(self, *exc) -> None:
        await self._client.__aexit__(*exc)

    def prepare(self, path: Path) -> str:
        """The image as a data URL (runs in a worker thread); raises BadImageError."""
        return encode_image(path, self.config.max_pixels, self.config.image_format)

    async def ask(self, prepared: str, system: str, user: str, history: list[tuple[str, str]] = ()) -> Reply:
        """Ask about one prepared image; raises LabelFailure once the SDK's retries are spent."""
        cfg = self.config
        body = self._client.request(build_messages(system, user, [prepared], history), max_tokens=cfg.max_tokens,
                                    temperature=cfg.temperature, json_mode=cfg.json_mode)
        try:
            completion = await self._client.complete(body)
        except EndpointError as err:
            raise LabelFailure(err.kind, err.reason, err.retries) from None
        return Reply(**asdict(completion))
