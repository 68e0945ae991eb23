"""From a dataset record to training tensors: chat template, label masking, batching.

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
decodes and resizes its images, in the data loader's worker processes
(:class:`TrainDataset`), and pads the batch (:class:`Collator`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from lab.conversation import to_hf_messages
from lab.errors import BadImageError
from lab.families import get_family
from lab.images import open_image
from lab.text import Msg

IGNORE = -100
# EXIF orientations 5-8 rotate by 90 degrees, which swaps width and height.
_SWAPPED_ORIENTATIONS = {5, 6, 7, 8}


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


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image as :func:`lab.images.open_image` will return it, read from its header."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise BadImageError(path, Msg("file not found")) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadImageError(path, Msg("not a readable image ({err})", err=err)) from None
    return (width, height) if orientation in _SWAPPED_ORIENTATIONS else (height, width)


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


class TrainDataset:
    """A map-style dataset over encoded samples; ``__getitem__`` decodes and processes the images.

    It runs in the data loader's worker processes, so image decoding and resizing overlap
    with the training step instead of stalling it.
    """

    def __init__(self, samples: list[EncodedSample], processor: Any, pixel_dtype: Any = None):
        self.samples = samples
        self.processor = processor
        # bf16 pixels halve the bytes that travel to the GPU; the model casts them to its dtype anyway
        self.pixel_dtype = pixel_dtype

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        return [s.length for s in self.samples]

    def __getitem__(self, index: int) -> dict:
        import torch

        sample = self.samples[index]
        if sample.videos:
            from lab.video import processor_media

            media = processor_media(self.processor, sample.images, sample.videos, sample.video_budget)
            out = self.processor(text=[sample.text], return_tensors="pt", **media)
        else:
            images = [open_image(path) for path in sample.images]
            out = self.processor(
                text=[sample.text], images=images or None, return_tensors="pt", add_special_tokens=False
            )
        ids = out["input_ids"][0]
        if ids.tolist() != sample.input_ids:
            raise RuntimeError(
                f"sample {sample.key}: the processor produced {len(ids)} tokens where {sample.length} were planned"
            )
        item = {k: (v[0] if _is_sequence(v, len(ids)) else v) for k, v in out.items() if v is not None}
        for pixels in ("pixel_values", "pixel_values_videos"):
            if self.pixel_dtype is not None and pixels in item:
                item[pixels] = item[pixels].to(self.pixel_dtype)
        item["labels"] = torch.tensor(sample.labels, dtype=torch.long)
        return item


def _is_sequence(value: Any, length: int) -> bool:
    return hasattr(value, "shape") and value.dim() == 2 and value.shape[0] == 1 and value.shape[1] == length


class RopeIndex:
    """The 3-D (M-RoPE) positions of a padded batch, from the model's own ``get_rope_index`` run on the CPU.

    A Qwen-VL model computes these positions inside ``forward`` when it is given none: a
    Python loop over the samples that reads token types and image grids back from the GPU,
    each read waiting for every kernel queued before it. The method reads nothing of the
    model but its config, so the data loader's workers run it on the batch's CPU tensors,
    with the same arguments the model would pass, and the model takes the result as it is.
    """

    def __init__(self, owner: type, config: Any):
        self.owner = owner  # the model class that defines get_rope_index
        self.config = config

    @classmethod
    def of(cls, model: Any) -> RopeIndex | None:
        """The positions function of ``model`` (under PEFT too), or None for models without M-RoPE."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        for module in base.modules():
            if callable(getattr(type(module), "get_rope_index", None)) and hasattr(module, "config"):
                return cls(type(module), module.config)
        return None

    def __call__(self, batch: dict) -> Any:
        """``(3, batch, seq)`` positions, or None where the model would not compute any (no images or videos)."""
        grids = {k: batch[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts") if k in batch}
        if "mm_token_type_ids" not in batch or not grids.keys() & {"image_grid_thw", "video_grid_thw"}:
            return None
        # The method is called on a bare instance that has the config and no weights.
        bare = object.__new__(self.owner)
        vars(bare)["config"] = self.config
        positions, _ = self.owner.get_rope_index(
            bare,
            batch["input_ids"],
            mm_token_type_ids=batch["mm_token_type_ids"],
            attention_mask=batch.get("attention_mask"),
            **grids,
        )
        return positions


class Collator:
    """Pads a list of :class:`TrainDataset` items into one batch (right padding).

    Per-token fields (ids, attention mask, token types) are padded to the longest sample,
    rounded up to ``pad_to_multiple_of``; labels are padded with -100. Image and video fields
    (``pixel_values``, ``image_grid_thw``, ``pixel_values_videos``, ``video_grid_thw``) are
    concatenated, as the processor does for a batch; where samples differ in size beyond the
    first dimension (SmolVLM's tiles per picture, MiniCPM-V's packed patches) they are padded
    with zeros first, as the processor pads them. The ``packed`` fields (a family's
    :attr:`~lab.families.Family.packed`: MiniCPM-V puts the patches of every picture of a batch
    into one sequence) are joined along their last dimension.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 1, packed: tuple[str, ...] = ()):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = max(1, pad_to_multiple_of)
        self.packed = tuple(packed)

    def __call__(self, items: list[dict]) -> dict:
        import torch

        longest = max(item["input_ids"].shape[0] for item in items)
        width = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        keys = dict.fromkeys(key for item in items for key in item)
        batch: dict[str, Any] = {}
        for key in keys:
            present = [item for item in items if key in item]
            if all(_per_token(item, key) for item in present) and len(present) == len(items):
                fill = self.pad_token_id if key == "input_ids" else IGNORE if key == "labels" else 0
                batch[key] = torch.stack([_pad(item[key], width, fill) for item in present])
            elif key in self.packed:
                batch[key] = torch.cat([item[key] for item in present], dim=-1)
            else:
                batch[key] = torch.cat(_pad_trailing([item[key] for item in present]), dim=0)
        return batch


class LossCollator(Collator):
    """A :class:`Collator` that also lists, on the CPU, where the loss looks (see :mod:`lab.training.trainer`).

    ``loss_positions``: sequence positions (shared by the batch) whose next token is learned;
    ``loss_index``: flat indices into ``batch x positions`` of the learned ones;
    ``loss_targets``: their token ids. With a :class:`RopeIndex` (``rope``) it also adds the
    model's ``position_ids``, so the model need not compute them on the GPU; with a
    :class:`~lab.training.tower_index.TowerIndex` (``tower``), the vision tower's index tensors
    (``tower_index``). With ``packing``
    a batch of several samples is one row without padding (:func:`lab.training.packing.pack`).
    """

    def __init__(
        self,
        pad_token_id: int,
        pad_to_multiple_of: int = 1,
        rope: RopeIndex | None = None,
        packed: tuple[str, ...] = (),
        packing: bool = False,
        tower: Any = None,
    ):
        super().__init__(pad_token_id, pad_to_multiple_of, packed)
        self.rope = rope
        self.packing = packing
        self.tower = tower  # a lab.training.tower_index.TowerIndex

    def __call__(self, items: list[dict]) -> dict:
        if self.packing and len(items) > 1:
            from lab.training.packing import pack

            batch = pack(items, self.pad_token_id, self.pad_to_multiple_of, self.rope)
        else:
            batch = super().__call__(items)
            rope_positions = self.rope(batch) if self.rope is not None else None
            if rope_positions is not None:
                batch["position_ids"] = rope_positions
        if self.tower is not None:
            from lab.training.tower_index import KEY

            batch[KEY] = self.tower(batch)
        shifted = batch["labels"][:, 1:]
        learned = shifted != IGNORE
        positions = learned.any(dim=0).nonzero().squeeze(1)
        kept = shifted[:, positions]
        flat = (kept != IGNORE).reshape(-1).nonzero().squeeze(1)
        batch["loss_positions"] = positions
        batch["loss_index"] = flat
        batch["loss_targets"] = kept.reshape(-1)[flat]
        return batch


def _per_token(item: dict, key: str) -> bool:
    value = item[key]
    return (
        value.dim() == 1
        and key not in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")
        and value.shape[0] == item["input_ids"].shape[0]
    )


def _pad_trailing(tensors: list) -> list:
    """``tensors`` zero-padded at the end of every dimension but the first to the largest size."""
    import torch.nn.functional as F

    if len({t.shape[1:] for t in tensors}) <= 1:
        return tensors
    largest = [max(sizes) for sizes in zip(*(t.shape[1:] for t in tensors))]
    padded = []
    for tensor in tensors:
        widths = [w for big, size in reversed(list(zip(largest, tensor.shape[1:]))) for w in (0, big - size)]
        padded.append(F.pad(tensor, widths))
    return padded


def _pad(tensor: Any, width: int, fill: int) -> Any:
    import torch

    if tensor.shape[0] == width:
        return tensor
    pad = torch.full((width - tensor.shape[0],), fill, dtype=tensor.dtype)
    return torch.cat([tensor, pad])
