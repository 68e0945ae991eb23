"""Talking to the loaded model: multi-turn history with images, streamed answers, stop, compare.

The history is a list of turns, each ``{"role": "user" | "assistant", "text": str,
"images": [paths]}``; the UI keeps one per browser tab and renders it, the CLI keeps one
for a single question. A user turn's images go before its text, as ``<image>``
placeholders in the ms-swift messages the model sees::

    [{"role": "user", "text": "What is it?", "images": ["a.png"]}]
    -> [{"role": "user", "content": "<image>What is it?"}], images ["a.png"]

Every answer holds the model only while it streams, so training or evaluation started
meanwhile are told the model is busy, and the other way round.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from lab.conversation import IMAGE_PLACEHOLDER
from lab.errors import LabError
from lab.handle import ModelHandle, adapter_names
from lab.jobs import unexpected_failure
from lab.settings import check, setting
from lab.text import Msg

logger = logging.getLogger(__name__)
ANSWERING = Msg("Answering")  # what failed, when an answer breaks off


@dataclass
class ChatSettings:
    """The knobs of one answer."""

    system: str = setting("", label="System prompt (empty: the model's default)")
    """System prompt; empty leaves the chat template's default."""
    temperature: float = setting(0.0, label="Temperature (0: greedy)", min=0, widget="slider", ui_max=2, step=0.05)
    """0 is greedy (the same answer every time, as evaluation answers); higher is more varied."""
    top_p: float = setting(0.9, label="Top-p", above=0, max=1, widget="slider", ui_min=0.05, step=0.05)
    """Sample only from the smallest set of tokens whose probabilities add up to this."""
    max_new_tokens: int = setting(512, label="Max new tokens", min=1, widget="slider", ui_max=4096)
    """Longest answer in tokens."""

    def __post_init__(self):
        check(self)


def user_turn(text: str, images: list[str | Path] = ()) -> dict:
    """A user turn; a typed ``<image>`` is dropped because images are placed by the lab."""
    text = (text or "").replace(IMAGE_PLACEHOLDER, "").strip()
    images = [str(p) for p in images]
    if not text and not images:
        raise LabError("Type a message or add an image first.")
    return {"role": "user", "text": text, "images": images}


def assistant_turn(text: str) -> dict:
    return {"role": "assistant", "text": text, "images": []}


def to_conversation(history: list[dict], system: str = "") -> tuple[list[dict], list[str]]:
    """The ms-swift messages and the image paths, in order, that the model sees for ``history``."""
    messages: list[dict] = [{"role": "system", "content": system.strip()}] if system.strip() else []
    images: list[str] = []
    for turn in history:
        placeholders = IMAGE_PLACEHOLDER * len(turn.get("images") or [])
        messages.append({"role": turn["role"], "content": placeholders + (turn.get("text") or "")})
        images.extend(turn.get("images") or [])
    return messages, images


def stream_reply(
    handle: ModelHandle,
    history: list[dict],
    settings: ChatSettings,
    *,
    adapter: bool | None = None,
    stop: threading.Event | None = None,
) -> Iterator[str]:
    """Stream the answer to ``history`` (ending with a user turn) as growing text.

    ``adapter`` True/False answers with the LoRA adapter on/off, None as the handle is set.
    Raises BusyError at once when the model is training or answering someone else.
    """
    from lab.generate import stream_generate
    from lab.images import open_image

    if not history or history[-1]["role"] != "user":
        raise LabError("The conversation must end with a user message.")
    messages, image_paths = to_conversation(history, settings.system)
    images = [open_image(p) for p in image_paths]
    with handle.generating(adapter) as loaded:
        try:
            yield from stream_generate(
                loaded,
                messages,
                images,
                max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature,
                top_p=settings.top_p,
                stop=stop,
            )
        except Exception as err:  # the library broke off: one sentence for the person, the traceback in the log
            logger.error("answering failed", exc_info=err)
            raise LabError(unexpected_failure(ANSWERING, err)) from None  # dynamic template: the failure


def reply(handle: ModelHandle, history: list[dict], settings: ChatSettings, *, adapter: bool | None = None) -> str:
    """The whole answer at once (the one-shot CLI)."""
    text = ""
    for text in stream_reply(handle, history, settings, adapter=adapter):  # noqa: B007  (the last is the whole)
        pass
    return text.strip()


def stream_compare(
    handle: ModelHandle,
    history_off: list[dict],
    history_on: list[dict],
    settings: ChatSettings,
    *,
    stop: threading.Event | None = None,
) -> Iterator[tuple[str, str]]:
    """Answer with the adapter off, then on; yields ``(answer_off, answer_on)`` as they grow.

    Each side keeps its own history (its own earlier answers), both ending with the same
    user turn.
    """
    if handle.loaded is not None and not adapter_names(handle.loaded):
        raise LabError("Compare mode needs a LoRA adapter; load or train a LoRA run first.")
    off = ""
    for off in stream_reply(handle, history_off, settings, adapter=False, stop=stop):
        yield off, ""
    if stop is not None and stop.is_set():
        return
    for on in stream_reply(handle, history_on, settings, adapter=True, stop=stop):
        yield off, on
