"""Faster ways to compute the same thing on a GPU. Each switch returns a function that undoes it.

LoRA input casting. PEFT keeps adapter weights in float32 for stable updates and casts
each adapter's input to float32 first: a full copy of the activations per adapted layer
(seven per decoder layer), then dropout in float32 and a cast back. Under mixed
precision the matrix products run in bf16 anyway (autocast casts the small adapter
weights instead), so the input cast is pure memory traffic; measured on an H100 with the
3B benchmark it was the largest non-matmul cost of a step. It is switched off while
training under autocast (:func:`skip_adapter_input_cast`).

Compiled decoder layers (``torch_compile: true``, off by default). A transformer is the
same block many times; ``torch.compile`` of each block (compiled once, reused by all)
fuses the norms, rotary embeddings, activations and adapter arithmetic into few kernels
and removes most per-operation launch cost (:func:`compile_blocks`). On an H100 it cut a
3B LoRA step at batch 16 from 1.17 s to 0.85 s in a fixed-batch loop; a block that
fails to compile runs as before.

Vision attention of the Qwen-VL towers. The tower runs every image of a batch as one
long sequence, split into independent pieces: one per image for full-attention blocks,
one per window (Qwen2.5-VL: 64 patches each) for windowed blocks. Without a
flash-attention package, transformers' SDPA path loops over the pieces in Python: for a
batch of 16 images at 448x448 that is 16 x 16 windows x 28 blocks, about 7,000 tiny
attention calls per step, and the GPU waits on the loop. The pieces of one length can
run as one batched SDPA call instead; for same-sized images every piece of a block has
the same length, so a block needs one call. The towers hand the piece boundaries
(``cu_seq_lens``) only to flash-style implementations, so this one registers under a
name with "flash" in it. A test checks it against the stock path for each family.
"""

from __future__ import annotations

from typing import Any, Callable

GROUPED_ATTENTION = "lab_flash_grouped_sdpa"
_VISION_ATTENTION_CLASSES = ("VisionAttention", "Qwen2_5_VLVisionAttention", "Qwen3VLVisionAttention")


def grouped_sdpa(module: Any, query: Any, key: Any, value: Any, attention_mask: Any = None, scaling: float | None = None,
                 dropout: float = 0.0, cu_seq_lens_q: Any = None, **kwargs: Any) -> tuple[Any, None]:
    """Attention within each piece of a packed ``(1, heads, seq, dim)`` sequence; returns ``(1, seq, heads, dim)``."""
    import torch
    import torch.nn.functional as F

    heads, seq, dim = query.shape[1], query.shape[2], query.shape[3]
    bounds = [0, seq] if cu_seq_lens_q is None else cu_seq_lens_q.tolist()
    lengths = [b - a for a, b in zip(bounds, bounds[1:])]
    # (seq, heads, dim) is how the towers lay the tensors out; pieces are runs along seq.
    flat = [t[0].transpose(0, 1) for t in (query, key, value)]
    if len(set(lengths)) == 1:
        n = lengths[0]
        parts = [t.reshape(seq // n, n, heads, dim).transpose(1, 2) for t in flat]
        out = F.scaled_dot_product_attention(*parts, dropout_p=dropout, scale=scaling)
        return out.transpose(1, 2).reshape(seq, heads, dim).unsqueeze(0), None
    groups: dict[int, list[int]] = {}
    for start, n in zip(bounds, lengths):
        groups.setdefault(n, []).append(start)
    pieces, order = [], []
    for n, starts in groups.items():
        index = (torch.tensor(starts)[:, None] + torch.arange(n)).reshape(-1).to(query.device)
        parts = [t.index_select(0, index).view(len(starts), n, heads, dim).transpose(1, 2) for t in flat]
        out = F.scaled_dot_product_attention(*parts, dropout_p=dropout, scale=scaling)
        pieces.append(out.transpose(1, 2).reshape(-1, heads, dim))
        order.append(index)
    inverse = torch.empty(seq, dtype=torch.long, device=query.device)
    inverse[torch.cat(order)] = torch.arange(seq, device=query.device)
    return torch.cat(pieces).index_select(0, inverse).unsqueeze(0), None


def use_grouped_vision_attention(model: Any) -> Callable[[], None]:
    """Switch the Qwen-VL vision towers of ``model`` from looped SDPA to :func:`grouped_sdpa`.

    Returns a function that switches them back. Models without such a tower, or whose
    tower already uses another implementation (flash attention, eager), are left alone.
    """
    from transformers import AttentionInterface

    AttentionInterface.register(GROUPED_ATTENTION, grouped_sdpa)
    configs = {}
    for module in model.modules():
        config = getattr(module, "config", None)
        if type(module).__name__ in _VISION_ATTENTION_CLASSES and getattr(config, "_attn_implementation", None) == "sdpa":
            configs[id(config)] = config
    for config in configs.values():
        config._attn_implementation = GROUPED_ATTENTION

    def restore() -> None:
        for config in configs.values():
            config._attn_implementation = "sdpa"

    return restore


def skip_adapter_input_cast(model: Any) -> Callable[[], None]:
    """Stop PEFT from casting each adapter's input to the adapter's float32 dtype (only safe under autocast)."""
    layers = [m for m in model.modules() if getattr(m, "cast_input_dtype_enabled", None) is True]
    for layer in layers:
        layer.cast_input_dtype_enabled = False

    def restore() -> None:
        for layer in layers:
            layer.cast_input_dtype_enabled = True

    return restore


def compile_blocks(model: Any) -> Callable[[], None]:
    """``torch.compile`` each decoder layer of the language model in place; returns the undo function.

    Only the language model: on an H100 a frozen vision block failed inside torch.compile
    (AOT partitioning), and since every checkpointed block of transformers shares one
    wrapper function, that failure switched compilation off for the decoder layers too.
    """
    import torch
    import torch._dynamo

    from lab.models import in_group, module_groups

    # A block dynamo cannot handle falls back to eager instead of failing the run.
    torch._dynamo.config.suppress_errors = True
    language = module_groups(model)["language"]
    blocks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.endswith(".layers") and in_group(name, language):
            blocks.extend(module)
    for block in blocks:
        block.compile()

    def restore() -> None:
        for block in blocks:
            block._compiled_call_impl = None

    return restore
