"""From a dataset record to token ids and labels: chat template, label masking, image tokens.

The loss must cover the assistant's answers only. Everything else (system prompt, the
user's question, image tokens, padding) gets the label -100, which the loss ignores.
A worked example with the tiny Qwen2.5-VL model (tokens as the tokenizer shows them,
``Ċ`` is a newline, ``Ġ`` a space)::

    messages = [{"role": "user", "content": "<image>What is it?"},
                {"role": "assistant", "content": "A cat."}]

    rendered   <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n
               <|im_start|>user\\n<|vision_start|><|image_pad|><|vision_end|>What is it?<|im_end|>\\n
               <|im_start|>assistant\\nA cat.<|im_end|>\\n

    tokens     <|im_start|> s y st e m Ċ You Ġare ... <|vision_start|> <|image_pad|> x36 <|vision_end|>
               What Ġis Ġit ? <|im_end|> Ċ <|im_start|> assistant Ċ  A  Ġcat  .  <|im_end|>  Ċ
    labels     -100 ......................................................................
               ............................................. -100  A  Ġcat  .  <|im_end|> -100

The answer and the ``<|im_end|>`` that closes it are learned (so the model learns to
stop); every other position is -100. In a multi-turn conversation every assistant turn
is learned. The single ``<|image_pad|>`` of the template is expanded to as many tokens
as the image needs (36 for a 224x224 picture with the tiny processor), computed from the
image size without decoding it, so every sample's length is known before training.
Families whose processor puts more than copies of the placeholder in its place (Gemma 3's
``<start_of_image>`` becomes new lines, the image tokens and ``<end_of_image>``; InternVL,
SmolVLM and MiniCPM-V add tile and slice markers) are expanded by the processor itself, on
blank pictures of the images' sizes, and the answer spans follow the text it inserted.

Tokenizing happens once, before training (:func:`encode_sample`); a training step only
decodes and resizes its images and pads the batch (:mod:`lab.training.collator`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from lab.conversation import to_hf_messages
from lab.families import get_family
from lab.images import image_size

IGNORE = -100


@dataclass
class EncodedSample:
    """One tokenized conversation: ids and labels with image tokens expanded, plus what a step needs."""

    key: str  # the record's id (or its line number), for messages
    text: str  # the rendered chat text, one image placeholder per image
    images: list[str]  # absolute image paths
    input_ids: list[int]
    labels: list[int]
    image_sizes: list[tuple[int, int]] = field(default_factory=list)  # (height, width), upright
    videos: list[str] = field(default_factory=list)  # absolute video paths (files or frame folders)
    video_budget: Any = None  # the lab.video.VideoBudget its videos are read with

    @property
    def length(self) -> int:
        return len(self.input_ids)

    @property
    def num_targets(self) -> int:
        return sum(label != IGNORE for label in self.labels)


def render_with_spans(processor: Any, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The chat-template text of ``messages`` and the character spans the loss covers.

    A span runs from the first character of an assistant answer to the end of its turn,
    the end-of-turn token included and trailing whitespace excluded. It is found by
    rendering the conversation up to that turn: what the template adds for the answer is
    exactly the text between the prompt (with the generation prompt) and the turn's end.
    """
    hf = to_hf_messages(messages)
    text = processor.apply_chat_template(hf, tokenize=False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for i, message in enumerate(hf):
        if message["role"] != "assistant":
            continue
        prompt = processor.apply_chat_template(hf[:i], tokenize=False, add_generation_prompt=True)
        upto = processor.apply_chat_template(hf[: i + 1], tokenize=False)
        if text.startswith(upto) and upto.startswith(prompt) and len(prompt) >= cursor:
            start, end = len(prompt), len(upto.rstrip())
        else:
            start, end = _find_answer(text, _answer_text(message), cursor, processor)
        spans.append((start, end))
        cursor = end
    return text, spans


def _answer_text(message: dict) -> str:
    content = message["content"]
    if isinstance(content, str):
        return content
    return "".join(part.get("text", "") for part in content if part.get("type") == "text")


def _find_answer(text: str, answer: str, cursor: int, processor: Any) -> tuple[int, int]:
    """Fallback for templates that render a turn differently once later turns follow it."""
    start = text.find(answer, cursor)
    if start < 0:
        raise ValueError(f"the chat template does not reproduce the answer {answer[:40]!r}")
    end = start + len(answer)
    eos = getattr(processor.tokenizer, "eos_token", None)
    if eos and text.startswith(eos, end):
        end += len(eos)
    return start, end


def label_tokens(tokenizer: Any, text: str, spans: list[tuple[int, int]]) -> tuple[list[int], list[int]]:
    """Token ids of ``text`` and their labels: the id inside a span, -100 outside."""
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    labels = [IGNORE] * len(ids)
    span_index = 0
    for i, (start, _end) in enumerate(encoded["offset_mapping"]):
        while span_index < len(spans) and start >= spans[span_index][1]:
            span_index += 1
        if span_index < len(spans) and spans[span_index][0] <= start < spans[span_index][1]:
            labels[i] = ids[i]
    return ids, labels


def expand_image_tokens(
    ids: list[int], labels: list[int], image_token_id: int, counts: list[int]
) -> tuple[list[int], list[int]]:
    """Repeat the i-th image placeholder ``counts[i]`` times, as the processor does; its labels stay -100."""
    out_ids: list[int] = []
    out_labels: list[int] = []
    images = iter(counts)
    for token, label in zip(ids, labels):
        if token == image_token_id:
            n = next(images, None)
            if n is None:
                raise ValueError("more image placeholders than images")
            out_ids.extend([token] * n)
            out_labels.extend([IGNORE] * n)
        else:
            out_ids.append(token)
            out_labels.append(label)
    if next(images, None) is not None:
        raise ValueError("more images than image placeholders")
    return out_ids, out_labels


def image_token_counts(processor: Any, sizes: list[tuple[int, int]]) -> list[int]:
    """How many tokens each image becomes under the processor's current pixel bounds."""
    if not sizes:
        return []
    data = processor._get_num_multimodal_tokens(image_sizes=[list(s) for s in sizes])
    return [int(n) for n in data["num_image_tokens"]]


def encode_sample(
    processor: Any,
    key: str,
    messages: list[dict],
    images: list[str],
    *,
    objects: dict | None = None,
    videos: list[str] = (),
    family: str | None = None,
    video_budget: Any = None,
) -> EncodedSample:
    """Render, tokenize and label one conversation; image placeholders expanded from the image sizes.

    ``objects`` (a record's boxes, :mod:`lab.grounding`) are written in ``family``'s form first;
    a sample with ``videos`` is expanded by the processor itself from the frames it will be
    trained on (:mod:`lab.video`), as the number of frames is only known once they are read.
    ``family`` (:mod:`lab.families`) also says whether an image placeholder is only repeated;
    otherwise, and for a model of no known family, the processor expands it.
    """
    sizes = [image_size(path) for path in images]
    if objects:
        from lab.grounding import grounded_messages

        messages = grounded_messages(processor, messages, objects, sizes, family)
    text, spans = render_with_spans(processor, messages)
    if videos:
        return _encode_with_videos(processor, key, text, spans, images, sizes, list(videos), video_budget)
    if sizes and get_family(family or "").expands != "repeat":
        ids, labels = _expanded_by_processor(processor, text, spans, sizes)
    else:
        ids, labels = label_tokens(processor.tokenizer, text, spans)
        counts = image_token_counts(processor, sizes)
        if counts:
            ids, labels = expand_image_tokens(ids, labels, image_token_id(processor), counts)
    return EncodedSample(key, text, [str(p) for p in images], ids, labels, sizes)


def _expanded_by_processor(
    processor: Any, text: str, spans: list[tuple[int, int]], sizes: list[tuple[int, int]]
) -> tuple[list[int], list[int]]:
    """Ids and labels of ``text`` as the processor expands its images (blank pictures of ``sizes``)."""
    blanks = [Image.new("RGB", (width, height)) for height, width in sizes]
    out = processor(
        text=[text],
        images=blanks,
        add_special_tokens=False,
        return_offsets_mapping=True,
        return_text_replacement_offsets=True,
    )
    ids = _as_list(out["input_ids"])
    offsets = _as_list(out["offset_mapping"])
    inserted = out["text_replacement_offsets"][0]

    def shifted(position: int) -> int:  # a position of ``text`` in the expanded text
        return position + sum(
            len(r["replacement"]) - (r["span"][1] - r["span"][0]) for r in inserted if r["span"][1] <= position
        )

    moved = [(shifted(start), shifted(end)) for start, end in spans]
    labels = [
        token if any(start <= offset[0] < end for start, end in moved) else IGNORE
        for token, offset in zip(ids, offsets)
    ]
    return ids, labels


def _as_list(value: Any) -> list:
    """The first row of a processor output (a list or a tensor) as a Python list."""
    row = value[0]
    return row.tolist() if hasattr(row, "tolist") else [tuple(x) if isinstance(x, list) else x for x in row]


def image_token_id(processor: Any) -> int:
    """The id of the token whose embeddings the image features replace."""
    # Gemma 3: the processor's is <start_of_image>, the tokenizer's the image soft token.
    token_id = getattr(getattr(processor, "tokenizer", None), "image_token_id", None)
    if not isinstance(token_id, int):
        token_id = getattr(processor, "image_token_id", None)
    if token_id is None:
        token_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    return int(token_id)


def _encode_with_videos(
    processor: Any,
    key: str,
    text: str,
    spans: list[tuple[int, int]],
    images: list[str],
    sizes: list[tuple[int, int]],
    videos: list[str],
    budget: Any,
) -> EncodedSample:
    """Labels on the processor's own expansion of ``text``: the answer spans moved past what it inserted."""
    from lab.video import VideoBudget, processor_media

    budget = budget or VideoBudget.of()
    out = processor(
        text=[text], return_text_replacement_offsets=True, **processor_media(processor, images, videos, budget)
    )
    expanded, moved = text, list(spans)
    for change in reversed(out["text_replacement_offsets"][0]):
        start, end = change["span"]
        expanded = expanded[:start] + change["replacement"] + expanded[end:]
        grow = len(change["replacement"]) - (end - start)
        moved = [(a + grow if a >= end else a, b + grow if b >= end else b) for a, b in moved]
    ids, labels = label_tokens(processor.tokenizer, expanded, moved)
    if ids != list(out["input_ids"][0]):
        raise ValueError("the processor tokenizes the expanded text differently")
    return EncodedSample(key, text, [str(p) for p in images], ids, labels, sizes, [str(v) for v in videos], budget)
