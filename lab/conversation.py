"""Between the dataset's messages and what a processor's chat template wants.

Datasets store ms-swift's form: string contents with ``<image>`` placeholders and a
separate list of images. Hugging Face chat templates want content parts::

    [{"role": "user", "content": "<image>What is it?"}]
    -> [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}]}]
"""

from __future__ import annotations

IMAGE_PLACEHOLDER = "<image>"


def to_hf_messages(messages: list[dict]) -> list[dict]:
    """Turn ``<image>`` placeholders into image parts, keeping text order."""
    converted = []
    for message in messages:
        content = message["content"]
        if not isinstance(content, str):
            converted.append(message)
            continue
        parts: list[dict] = []
        for i, chunk in enumerate(content.split(IMAGE_PLACEHOLDER)):
            if i > 0:
                parts.append({"type": "image"})
            if chunk:
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
