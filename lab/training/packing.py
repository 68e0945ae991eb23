"""Padding-free batches ("packing"): the samples of a step laid end to end in one row.

A padded batch of samples of different lengths spends part of every step on padding. A
packed batch holds the same samples in one row of ``sum(lengths)`` tokens, as HF's
``DataCollatorWithFlattening`` and ms-swift's ``padding_free`` do, and computes the same
thing, because three things stay per sample:

* Labels: a sample's first token is never the target of the previous sample's last one
  (its label is -100; the padded batch never learns a first token either).
* Positions: each sample's positions restart at its own start. A Qwen-VL model gets its
  3-D (M-RoPE) positions computed on each sample alone by its own ``get_rope_index``
  (:class:`~lab.training.collator.RopeIndex`), which is what it computes for that sample in
  a padded batch, with the plain positions in front as a fourth row: transformers' Qwen-VL
  text models read ``position_ids`` of shape ``(4, 1, tokens)`` as text positions then the
  3-D ones, and pass the text positions on to the attention function.
* Attention: :func:`packed_sdpa`, registered for the language model while packing, finds
  the samples' boundaries where the text positions restart (once per forward pass) and
  attends causally within each: ``torch.nn.attention.varlen.varlen_attn`` on a CUDA GPU in
  bf16/fp16 (PyTorch 2.10 and later), otherwise one causal SDPA call per group of samples
  of equal length. Anything else (generation, a padded batch) goes to transformers' SDPA.

Worked example: samples of 3 and 2 tokens, padded to a multiple of 4::

    input_ids      a0 a1 a2 b0 b1 <pad> <pad> <pad>
    labels         -100 a1 a2 -100 b1 -100 -100 -100
    text positions 0  1  2  0  1  0  0  1     (the padding is a sample of its own)

:func:`config_refusal` (checked with the config) and :func:`model_refusal` (checked before the
model loads) refuse ``packing: true`` with a sentence where it cannot apply.
"""

from __future__ import annotations

import inspect
import itertools
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from lab.text import Msg
from lab.training.collator import _per_token
from lab.training.encode import IGNORE

if TYPE_CHECKING:
    pass

PACKED_ATTENTION = "lab_packed_sdpa"


# ---------------------------------------------------------------- the packed batch


def pack(items: list[dict], pad_token_id: int, multiple: int = 1, rope: Any = None) -> dict:
    """One row of the samples ``items`` (:class:`~lab.training.collator.TrainDataset` items) end to end.

    Per-token fields are concatenated (``attention_mask`` is left out: nothing is padding),
    image and video fields concatenated as in a padded batch. Tokens up to a multiple of
    ``multiple`` follow as a sample of padding. ``sample_lengths`` lists the samples' lengths.
    """
    import torch

    lengths = [int(item["input_ids"].shape[0]) for item in items]
    pad = -sum(lengths) % max(1, multiple)
    batch: dict[str, Any] = {}
    for key in dict.fromkeys(key for item in items for key in item):
        if key == "attention_mask":
            continue
        present = [item for item in items if key in item]
        if len(present) == len(items) and all(_per_token(item, key) for item in present):
            fill = pad_token_id if key == "input_ids" else IGNORE if key == "labels" else 0
            tail = [torch.full((pad,), fill, dtype=present[0][key].dtype)] if pad else []
            batch[key] = torch.cat([item[key] for item in present] + tail)[None]
        else:
            batch[key] = torch.cat([item[key] for item in present], dim=0)
    starts = [0, *itertools.accumulate(lengths)][:-1]
    batch["labels"][0, starts] = IGNORE
    batch["position_ids"] = packed_positions(items, pad, rope)
    batch["sample_lengths"] = torch.tensor(lengths)
    return batch


def packed_positions(items: list[dict], pad: int, rope: Any = None) -> Any:
    """``(4, 1, tokens)``: text positions restarting per sample, then each sample's own 3-D positions;
    ``(1, tokens)`` text positions alone for a model without 3-D positions (``rope`` None)."""
    import torch

    lengths = [int(item["input_ids"].shape[0]) for item in items] + ([pad] if pad else [])
    text = torch.cat([torch.arange(n) for n in lengths])
    if rope is None:
        return text[None]
    rows = []
    for item, n in zip(items, lengths):
        alone = {key: value[None] if _per_token(item, key) else value for key, value in item.items()}
        positions = rope(alone)  # None for a sample without pictures: the model's plain positions
        rows.append(positions if positions is not None else torch.arange(n).expand(3, 1, n))
    if pad:
        rows.append(torch.arange(pad).expand(3, 1, pad))
    return torch.cat([text.view(1, 1, -1), torch.cat(rows, dim=2).to(text.dtype)])


# ---------------------------------------------------------------- attention within each sample

_last_pieces: list = [None, None]  # (text positions, their piece lengths): the layers of a forward share them


def piece_lengths(position_ids: Any) -> list[int]:
    """Lengths of the runs of ``position_ids`` that start at 0 (one read from the device per forward pass)."""
    if _last_pieces[0] is position_ids:
        return _last_pieces[1]
    flat = position_ids.reshape(-1)
    starts = (flat == 0).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    lengths = [b - a for a, b in zip(starts, [*starts[1:], flat.shape[0]])]
    _last_pieces[:] = [position_ids, lengths]
    return lengths


def packed_sdpa(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any = None,
    dropout: float = 0.0,
    scaling: float | None = None,
    position_ids: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Causal attention within each sample of a packed ``(1, heads, tokens, dim)`` row; ``(1, tokens, heads, dim)``.

    A padded batch, a cached generation step or a row without text positions is not packed:
    transformers' own SDPA takes it with its mask.
    """
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    packed = (
        attention_mask is None
        and position_ids is not None
        and query.shape[0] == 1
        and query.shape[2] == key.shape[2] > 1
    )
    lengths = torch.compiler.disable(piece_lengths)(position_ids) if packed else []
    if len(lengths) <= 1:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    if _varlen_applies(query, dropout):
        return _varlen(query, key, value, lengths, scaling), None
    return _causal_pieces(query, key, value, lengths, scaling, dropout), None


def _varlen_applies(query: Any, dropout: float) -> bool:
    import torch

    if not query.is_cuda or dropout or query.dtype not in (torch.float16, torch.bfloat16):
        return False
    try:
        from torch.nn.attention.varlen import varlen_attn  # noqa: F401  (PyTorch 2.10 and later)
    except ImportError:
        return False
    return query.shape[-1] % 8 == 0 and query.shape[-1] <= 256


def _varlen(query: Any, key: Any, value: Any, lengths: list[int], scaling: float | None) -> Any:
    """Flash attention over the pieces in one kernel call (torch's ``varlen_attn``)."""
    import torch
    from torch.nn.attention.varlen import varlen_attn

    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # (tokens, heads, dim)
    bounds = torch.tensor([0, *itertools.accumulate(lengths)], dtype=torch.int32).to(query.device, non_blocking=True)
    accepted = inspect.signature(varlen_attn).parameters
    # PyTorch 2.10 took is_causal; later versions take a window, (-1, 0) being causal.
    options = {"window_size": (-1, 0)} if "window_size" in accepted else {"is_causal": True}
    if k.shape[1] != q.shape[1]:  # grouped-query attention: each key/value head serves a group of query heads
        if "enable_gqa" in accepted:
            options["enable_gqa"] = True
        else:
            groups = q.shape[1] // k.shape[1]
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    longest = max(lengths)
    out = varlen_attn(q, k, v, bounds, bounds, longest, longest, scale=scaling, **options)
    return out.unsqueeze(0)


def _causal_pieces(query: Any, key: Any, value: Any, lengths: list[int], scaling: float | None, dropout: float) -> Any:
    """Causal SDPA per piece, one call for all the pieces of one length."""
    import torch
    import torch.nn.functional as F

    heads, seq, dim = query.shape[1], query.shape[2], query.shape[3]
    groups: dict[int, list[int]] = {}
    for start, n in zip(itertools.accumulate([0, *lengths]), lengths):
        groups.setdefault(n, []).append(start)
    gqa = key.shape[1] != heads
    pieces, order = [], []
    for n, starts in groups.items():
        index = (torch.tensor(starts)[:, None] + torch.arange(n)).reshape(-1).to(query.device)
        # (heads, k * n, dim) -> (k, heads, n, dim): the pieces of this length side by side as a batch
        parts = [
            t[0].index_select(1, index).view(t.shape[1], len(starts), n, dim).transpose(0, 1)
            for t in (query, key, value)
        ]
        out = F.scaled_dot_product_attention(*parts, dropout_p=dropout, scale=scaling, is_causal=True, enable_gqa=gqa)
        pieces.append(out.transpose(1, 2).reshape(-1, heads, dim))
        order.append(index)
    inverse = torch.empty(seq, dtype=torch.long, device=query.device)
    inverse[torch.cat(order)] = torch.arange(seq, device=query.device)
    return torch.cat(pieces).index_select(0, inverse).unsqueeze(0)


def packed_mask(
    batch_size: int, q_length: int, kv_length: int, q_offset: Any = 0, attention_mask: Any = None, **kwargs: Any
) -> Any:
    """The mask transformers makes for :func:`packed_sdpa`: none for one row without padding (the attention
    finds the samples itself, where a full mask would take tokens x tokens memory), SDPA's otherwise."""
    from transformers.masking_utils import sdpa_mask

    if (
        batch_size == 1
        and attention_mask is None
        and q_length == kv_length
        and isinstance(q_offset, int)
        and not q_offset
    ):
        return None
    return sdpa_mask(
        batch_size=batch_size,
        q_length=q_length,
        kv_length=kv_length,
        q_offset=q_offset,
        attention_mask=attention_mask,
        **kwargs,
    )


def use_packed_attention(model: Any) -> Callable[[], None]:
    """Switch the language model of ``model`` from SDPA to :func:`packed_sdpa`; returns the function that undoes it.

    A language model on another implementation is left alone: flash attention finds the
    pieces in the text positions itself, eager attention gets transformers' packed mask.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    from lab.model_parts import in_group, module_groups

    AttentionInterface.register(PACKED_ATTENTION, packed_sdpa)
    AttentionMaskInterface.register(PACKED_ATTENTION, packed_mask)
    language = module_groups(model)["language"]
    configs = {}
    for name, module in model.named_modules():
        config = getattr(module, "config", None)
        if in_group(name, language) and getattr(config, "_attn_implementation", None) == "sdpa":
            configs[id(config)] = config
    for config in configs.values():
        config._attn_implementation = PACKED_ATTENTION

    def restore() -> None:
        for config in configs.values():
            config._attn_implementation = "sdpa"
        _last_pieces[:] = [None, None]

    return restore


# ---------------------------------------------------------------- where packing applies


def model_refusal(model: str) -> Msg | None:
    """Why the model named ``model`` cannot be packed exactly, from its config.json and its classes; None if it can.

    Its model class must compute 3-D positions (``get_rope_index``), take an attention function
    (``_supports_attention_backend``), read text positions in front of them (``text_position_ids``
    in its module: transformers' Qwen-VL text models), and its language model must attend fully
    in every layer (no sliding windows, no linear-attention layers, which would need the
    boundaries too).
    """
    import transformers
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    from lab import paths
    from lab.train_config import DEMO_MODEL
    from lab.training.sizes import read_model_config

    if model == DEMO_MODEL and not (paths.demo_model_dir() / "config.json").is_file():
        raw = {"model_type": "qwen2_5_vl"}  # the demo model, built (lab/tiny.py) when the run loads it
    else:
        raw = read_model_config(model)
    model_type = str(raw.get("model_type", ""))
    name = MODEL_MAPPING_NAMES.get(model_type)
    cls = getattr(transformers, name, None) if isinstance(name, str) else None
    module = sys.modules.get(cls.__module__) if cls is not None else None
    takes = (
        cls is not None
        and callable(getattr(cls, "get_rope_index", None))
        and getattr(cls, "_supports_attention_backend", False)
        and "text_position_ids" in inspect.getsource(module)
    )
    if not takes:
        return Msg(
            "packing needs a model with Qwen-VL's 3-D positions whose attention takes each sample's "
            "boundaries, and {model} ({model_type}) is not one; set packing to false.",
            model=model,
            model_type=model_type or "?",
        )
    config = AutoConfig.for_model(**{k: v for k, v in raw.items() if k != "transformers_version"})
    layers = set(getattr(config.get_text_config(), "layer_types", None) or ["full_attention"])
    if layers != {"full_attention"}:
        return Msg(
            "packing needs full attention in every layer of the language model, and {model} has {kinds} layers; "
            "set packing to false.",
            model=model,
            kinds=", ".join(sorted(layers - {"full_attention"})),
        )
    return None


def config_refusal(trainer: str, batch: int | str) -> Msg | None:
    """Why a run with ``trainer`` and ``batch`` samples per forward pass cannot be packed; None if it can."""
    if trainer == "grpo":
        return Msg(
            "packing applies to SFT batches, and trainer 'grpo' batches its own sampled answers; set packing to false."
        )
    if batch == 1:
        return Msg("packing lays the samples of a batch end to end, so it needs per_device_batch_size above 1.")
    return None
