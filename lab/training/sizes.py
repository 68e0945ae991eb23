"""What a forecast reads before anything loads: the model's ``config.json`` and the dataset's lengths.

:func:`read_model_config` finds the config (a model folder, the demo model, a small table of
known Hub models, or the Hub cache; never the weights) and :func:`arch_of` turns it into the
:class:`~lab.training.forecast.Arch` the forecast needs. :func:`dataset_lengths` counts the
training samples' tokens: text from its characters, image tokens from each image's size as
read from the file's header, by the family's resize rule. :mod:`lab.training.fit` plans a run
from both.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import paths
from lab.errors import ConfigError
from lab.training.forecast import Arch

SAMPLED_RECORDS = 2000  # records whose lengths are counted; a larger dataset is sampled evenly
ASCII_CHARS_PER_TOKEN = 4.0  # English and JSON with a Qwen-style BPE; a CJK character is about 0.7 tokens
CJK_TOKENS_PER_CHAR = 0.7
TEMPLATE_TOKENS = {"system": 14, "message": 5, "image": 2}  # Qwen's chat template: default system, role lines

# config.json values of the Hub models the presets name, so a forecast needs no download.
QWEN2_5_VL_VISION = dict(hidden_size=1280, intermediate_size=3420, depth=32, patch_size=14, spatial_merge_size=2)
KNOWN_CONFIGS = {
    "Qwen/Qwen2.5-VL-3B-Instruct": dict(
        model_type="qwen2_5_vl",
        tie_word_embeddings=True,
        text_config=dict(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
        ),
        vision_config=dict(QWEN2_5_VL_VISION, out_hidden_size=2048),
    ),
    "Qwen/Qwen2.5-VL-7B-Instruct": dict(
        model_type="qwen2_5_vl",
        tie_word_embeddings=False,
        text_config=dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
        ),
        vision_config=dict(QWEN2_5_VL_VISION, out_hidden_size=3584),
    ),
}


# ---------------------------------------------------------------- the model's architecture


def read_model_config(model: str) -> dict:
    """The ``config.json`` of ``model`` (a folder, ``demo``, a known Hub id, or one in the Hub cache).

    The name first passes the check :func:`lab.models.load_model` makes, so on a shared deployment a
    forecast tells nothing about folders a visitor may not load.
    """
    from lab.model_sources import check_model_source
    from lab.train_config import DEMO_MODEL

    if model == DEMO_MODEL:
        folder = paths.demo_model_dir("qwen2_5_vl")
        if not (folder / "config.json").is_file():
            raise ConfigError("The demo model is not built yet; the app builds it when it starts.")
        return _read_json(folder / "config.json")
    check_model_source(model)
    folder = paths.resolve(model)
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise ConfigError("{model} has no config.json, so its memory cannot be forecast.", model=model)
        return _read_json(folder / "config.json")
    if model in KNOWN_CONFIGS:
        return KNOWN_CONFIGS[model]
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model, "config.json")
    except ValueError:  # not a valid repo id either (HFValidationError)
        cached = None
    if isinstance(cached, str):
        return _read_json(Path(cached))
    raise ConfigError(
        "No config.json for {model}: give a model folder, or load the model once so that its "
        "files are in the Hub cache.",
        model=model,
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise ConfigError("{path} cannot be read ({err}).", path=path, err=err) from None


def arch_of(raw: dict) -> Arch:
    """The :class:`Arch` of a Qwen-VL-style ``config.json`` (text settings nested or at the top).

    Other families count image tokens their own way (tiles, slices, a fixed count: ``pixels`` in
    :mod:`lab.families`), which the forecast does not model: they are refused with a sentence,
    and ``auto`` settings then fall back to batch 1 with checkpointing.
    """
    from lab.families import get_family

    model_type = str(raw.get("model_type", ""))
    if get_family(model_type).pixels != "qwen":
        raise ConfigError(
            "The forecast counts image tokens as Qwen-VL models do, and {model_type} models count them their own "
            "way, so their memory cannot be forecast yet.",
            model_type=model_type or "?",
        )
    text = raw.get("text_config") or raw
    vision = raw.get("vision_config") or {}
    try:
        hidden, heads = text["hidden_size"], text["num_attention_heads"]
        if "embed_dim" in vision:  # Qwen2-VL: a plain MLP of mlp_ratio x embed_dim, output in hidden_size
            v_hidden = vision["embed_dim"]
            v_inter, swiglu, v_out = (
                int(v_hidden * vision.get("mlp_ratio", 4)),
                False,
                vision.get("hidden_size", hidden),
            )
        else:
            v_hidden = vision.get("hidden_size", 1280)
            v_inter, v_out = vision.get("intermediate_size", 4 * v_hidden), vision.get("out_hidden_size", hidden)
            swiglu = raw.get("model_type") == "qwen2_5_vl"
        return Arch(
            model_type=raw.get("model_type", ""),
            hidden=hidden,
            intermediate=text["intermediate_size"],
            layers=text["num_hidden_layers"],
            heads=heads,
            kv_heads=text.get("num_key_value_heads") or heads,
            head_dim=text.get("head_dim") or hidden // heads,
            vocab=text["vocab_size"],
            tied=bool(raw.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
            vision_hidden=v_hidden,
            vision_intermediate=v_inter,
            vision_depth=vision.get("depth", 0),
            vision_swiglu=swiglu,
            patch=vision.get("patch_size", 14),
            merge=vision.get("spatial_merge_size", 2),
            vision_out=v_out,
            temporal_patch=vision.get("temporal_patch_size", 2),
        )
    except KeyError as err:
        raise ConfigError(
            "The model's config.json has no {key}, so its memory cannot be forecast.", key=err.args[0]
        ) from None


# ---------------------------------------------------------------- the dataset's lengths


@dataclass(frozen=True)
class Lengths:
    """Training samples and their lengths in tokens (the longest kept within ``max_length``)."""

    samples: int
    mean_tokens: float
    max_tokens: int
    mean_answer: float
    max_answer: int
    image_share: float


def smart_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """Qwen-VL's resize rule (qwen-vl-utils' ``smart_resize``, which imports torch): sides in multiples of
    ``factor``, area within ``[min_pixels, max_pixels]``, aspect kept."""
    h, w = max(factor, round(height / factor) * factor), max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h, w = (
            max(factor, math.floor(height / beta / factor) * factor),
            max(factor, math.floor(width / beta / factor) * factor),
        )
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h, w = math.ceil(height * beta / factor) * factor, math.ceil(width * beta / factor) * factor
    return h, w


def image_tokens(path: str | Path, arch: Arch, min_pixels: int | None, max_pixels: int | None) -> int:
    """Image tokens of one image, from its size in the file's header (no pixels decoded)."""
    from PIL import Image

    with Image.open(path) as im:
        width, height = im.size
    f = arch.factor
    h, w = smart_resize(height, width, f, min_pixels or 4 * f * f, max_pixels or 16384 * f * f)
    return (h // f) * (w // f)


def text_tokens(text: str) -> int:
    ascii_chars = sum(1 for c in text if c.isascii())
    return math.ceil(ascii_chars / ASCII_CHARS_PER_TOKEN + (len(text) - ascii_chars) * CJK_TOKENS_PER_CHAR)


def record_tokens(record: dict, arch: Arch, cfg: Any) -> tuple[int, int, int]:
    """``(tokens, answer tokens, image tokens)`` of one record as the chat template lays it out."""
    messages = [m for m in record.get("messages") or [] if isinstance(m, dict)]
    tokens = 0 if any(m.get("role") == "system" for m in messages) or cfg.system else TEMPLATE_TOKENS["system"]
    answer = 0
    for m in messages:
        n = text_tokens(str(m.get("content") or "")) + TEMPLATE_TOKENS["message"]
        tokens += n
        answer = n if m.get("role") == "assistant" else answer  # the loss is on the last answer
    images = 0
    for path in record.get("images") or []:
        try:
            images += image_tokens(path, arch, cfg.min_pixels, cfg.max_pixels) + TEMPLATE_TOKENS["image"]
        except (OSError, ValueError):
            continue  # the dataset check reports unreadable images
    frames = cfg.video_max_frames // 2  # two frames make one temporal patch
    images += len(record.get("videos") or []) * frames * (cfg.video_max_pixels // arch.factor**2)
    return tokens + images, answer, images


def dataset_lengths(cfg: Any, arch: Arch) -> Lengths:
    """The training samples' lengths (a sample of at most :data:`SAMPLED_RECORDS` records)."""
    from lab.training.mix import mixed_splits

    train, _, _ = mixed_splits(cfg.dataset, cfg.val_ratio, cfg.seed, with_val=not cfg.val_dataset)
    step = max(1, len(train) // SAMPLED_RECORDS)
    counted = [record_tokens(r, arch, cfg) for r in train[::step]]
    kept = [c for c in counted if c[0] <= cfg.max_length] or [(cfg.max_length, 0, 0)]
    n = len(kept)
    return Lengths(
        samples=round(len(train) * n / max(len(counted), 1)),
        mean_tokens=sum(c[0] for c in kept) / n,
        max_tokens=max(c[0] for c in kept),
        mean_answer=sum(c[1] for c in kept) / n,
        max_answer=max(c[1] for c in kept),
        image_share=sum(c[2] for c in kept) / max(sum(c[0] for c in kept), 1),
    )
