"""Between the dataset's messages and what a processor's chat template wants.

Datasets store ms-swift's form: string contents with ``<image>`` (and ``<video>``)
placeholders and separate lists of images (and videos). Hugging Face chat templates want
content parts::

    [{"role": "user", "content": "<image>What is it?"}]
    -> [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
"""

from __future__ import annotations

import re

IMAGE_PLACEHOLDER = "<image>"
VIDEO_PLACEHOLDER = "<video>"
_MEDIA = re.compile(f"({re.escape(IMAGE_PLACEHOLDER)}|{re.escape(VIDEO_PLACEHOLDER)})")


def to_hf_messages(messages: list[dict]) -> list[dict]:
    """Turn ``<image>`` and ``<video>`` placeholders into image and video parts, keeping text order."""
    converted = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            converted.append(message)
            continue
        parts: list[dict] = []
        for chunk in _MEDIA.split(content):
            if chunk == IMAGE_PLACEHOLDER:
                parts.append({"type": "image"})
            elif chunk == VIDEO_PLACEHOLDER:
                parts.append({"type": "video"})
            elif chunk:
                parts.append({"type": "text", "text": chunk})
        converted.append({"role": message["role"], "content": parts})
    return converted


def count_placeholders(messages: list[dict]) -> int:
    return sum(m["content"].count(IMAGE_PLACEHOLDER) for m in messages if isinstance(m["content"], str))


def split_prompt(messages: list[dict]) -> tuple[list[dict], str | None]:
    """The messages up to the last user turn, and the last assistant answer (or None)."""
    if messages and messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]["content"]
    return messages, None
