"""The loaded local model as the labeler: free, offline, slower.

For a classroom without an API key, the model in the app (the tiny demo model, or a
real Qwen-VL loaded from disk) can label a folder itself. The run claims the shared
:class:`~lab.handle.ModelHandle` for its whole length, so training cannot start in the
middle of it; if the model is busy the run is refused at once with a BusyError.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path
from typing import Any

from lab.images import open_image
from lab.labeling.client import LabelerConfig
from lab.labeling.costs import FREE
from lab.labeling.item import LabelFailure, Reply
from lab.presets import with_image_placeholder
from lab.text import Msg

LOCAL = "local"  # the provider name that means "the model loaded in the app"

# What the local labeler starts with, where the API's settings would not do: a model on a laptop's
# CPU answers a few tokens a second, so answers are short and pictures small; and an untrained model
# (the demo) decoded greedily repeats one token (a blank line) to the limit, while sampling shows
# what it knows. Every one of them can still be changed in the form or by a flag.
LOCAL_DEFAULTS = {"max_new_tokens": 64, "max_pixels": 256 * 28 * 28, "temperature": 0.7}


def local_config(**given) -> LabelerConfig:
    """The local labeler's settings: :data:`LOCAL_DEFAULTS`, then ``given``."""
    return LabelerConfig(**{**LOCAL_DEFAULTS, **given})


class LocalLabeler:
    """Labels with ``handle``'s model through :func:`lab.generate.generate_batch`, one image at a time.

    It takes the labeler's settings (:class:`LabelerConfig`) and uses ``max_new_tokens``,
    ``temperature`` and ``max_pixels``; the endpoint's settings do not apply.
    """

    concurrency = 1  # one GPU (or CPU) generates one answer at a time
    price = FREE
    reask = False

    def __init__(self, handle, config: LabelerConfig | None = None, **settings):
        config = replace(config or LabelerConfig(), **settings)
        self.handle = handle
        self.max_new_tokens = config.max_new_tokens
        self.temperature = config.temperature
        self.max_pixels = config.max_pixels
        loaded = handle.loaded
        # With a run's adapter on, the fine-tuned model labels (as the header's adapter switch says).
        adapter = getattr(loaded, "adapter", None) if handle.adapter_enabled else None
        self.name = f"local:{Path(str(getattr(loaded, 'name', 'model'))).name}" + (f"+{adapter}" if adapter else "")
        self._claim = None
        self._loaded: Any = None

    async def __aenter__(self) -> LocalLabeler:
        self._claim = self.handle.generating()
        self._loaded = self._claim.__enter__()  # BusyError when training or loading
        return self

    async def __aexit__(self, *exc) -> None:
        if self._claim is not None:
            self._claim.__exit__(None, None, None)
            self._claim = self._loaded = None

    def prepare(self, path: Path):
        """The image, upright RGB and shrunk to the pixel budget; raises BadImageError."""
        return open_image(path, max_pixels=self.max_pixels)

    async def ask(self, prepared, system: str, user: str, history: list[tuple[str, str]] = ()) -> Reply:
        """Generate the answer in a worker thread, so the run's event loop stays free."""
        from lab.generate import generate_batch

        conversation = [{"role": "system", "content": system}] if system.strip() else []
        conversation.append({"role": "user", "content": with_image_placeholder(user)})
        for answer, follow_up in history:
            conversation += [{"role": "assistant", "content": answer}, {"role": "user", "content": follow_up}]
        try:
            generation = (
                await asyncio.to_thread(
                    generate_batch,
                    self._loaded,
                    [conversation],
                    [[prepared]],
                    max_new_tokens=self.max_new_tokens,
                    temperature=self.temperature,
                )
            )[0]
        except Exception as err:  # e.g. out of memory: this image fails, the run goes on
            raise LabelFailure(
                "local_error",
                Msg("the local model failed: {err_type}: {err}", err_type=type(err).__name__, err=str(err)[:160]),
            ) from None
        return Reply(
            text=generation.text,
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            seconds=generation.seconds,
            finish_reason="length" if generation.completion_tokens >= self.max_new_tokens else "stop",
        )
