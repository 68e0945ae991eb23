"""Faster ways to compute the same thing on a GPU. Each switch returns a function that undoes it.

LoRA input casting. PEFT keeps adapter weights in float32 for stable updates and casts
each adapter's input to float32 first: a full copy of the activations per adapted layer
(seven per decoder layer), then dropout in float32 and a cast back. Under mixed
precision the matrix products run in bf16 anyway (autocast casts the small adapter
weights instead), so the input cast is pure memory traffic; measured on an H100 with the
3B benchmark it was the largest non-matmul cost of a step. It is switched off while
training under autocast (:func:`skip_adapter_input_cast`).

Compiled decoder layers (``torch_compile: true``). A transformer is the same block many
times; ``torch.compile`` of each block (compiled once, reused by all) fuses the norms,
rotary embeddings, activations and adapter arithmetic into few kernels and removes most
per-operation launch cost (:func:`compile_blocks`). At small batches a LoRA step is bound
by the host launching kernels, not by the GPU: on an H100 with the 3B benchmark, batch 4
went from 2,567 to 4,430 tokens/s and batch 16 from 9,375 to 12,822, for about 2 s (batch
4) to 11 s (batch 16) more warm-up. A block that fails to compile runs as before. The
compiled blocks use PyTorch's random numbers, not Inductor's: with Inductor's, a
checkpointed block drew new dropout masks when it recomputed its forward pass, and its
gradients were not those of its loss (a test checks this on the CPU). While blocks are
compiled, batches are padded to a multiple of 64 tokens (:func:`pad_for_compiled_blocks`).
A frozen vision tower's blocks are compiled too: the tower runs without autograd, so its blocks
compile to forward-only graphs (on an H200 with the 3B benchmark at batch 16, 14,936 to 16,990
tokens/s, its eager elementwise kernels from 46 to 8 ms a step).

Vision attention of the Qwen-VL towers. The tower runs every image of a batch as one
long sequence, split into independent pieces: one per image for full-attention blocks,
one per window (Qwen2.5-VL: 64 patches each) for windowed blocks. Without a
flash-attention package, transformers' SDPA path loops over the pieces in Python: for a
batch of 16 images at 448x448 that is 16 x 16 windows x 28 blocks, about 7,000 tiny
attention calls per step, and the GPU waits on the loop. The pieces of one length can
run as one batched SDPA call instead; for same-sized images every piece of a block has
the same length, so a block needs one call. The towers hand the piece boundaries
(``cu_seq_lens``) only to flash-style implementations, so this one registers under a
name with "flash" in it. A test checks it against the stock path for each family. Such a
name also makes the towers compute the longest piece once per forward on the host, so a
block whose pieces all have that length needs no copy of the boundaries from the GPU (a
copy waits for every queued kernel, and 32 blocks did that 32 times a step).

A ready causal mask. From a 2-D padding mask, transformers builds the 4-D one that SDPA takes, and
first reads back from the GPU whether any token is padding (to hand SDPA no mask at all if none is):
one more wait for every queued kernel each step. Where the family's language model attends
causally and nothing else (``causal_mask`` in the family table), the training step builds the
same boolean mask itself, and transformers takes a 4-D mask as it is (:func:`ready_causal_mask`);
a batch without padding comes from the data loader without a mask, and SDPA attends with its own
causal kernel as before.

Frozen vision tower without autograd. With gradient checkpointing on, transformers hooks the
input embeddings of every sub-model so that their outputs require grad, the vision tower's
patch embedding included: a frozen tower was then recorded, recomputed in the backward
pass and differentiated down to its first layer, for gradients nobody reads. Run under
``torch.no_grad`` it costs its forward pass alone; the adapters' gradients are unchanged
(:func:`frozen_towers_without_grad`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

GROUPED_ATTENTION = "lab_flash_grouped_sdpa"
COMPILED_PAD_MULTIPLE = 64
# The names under which vision towers keep their repeated blocks (Qwen-VL: ``blocks``; SigLIP-style
# encoders: ``layers``; InternViT: ``layer``).
_BLOCK_LISTS = ("blocks", "layers", "layer")
_RECOMPILE_LIMIT = 32
_VISION_ATTENTION_CLASSES = (
    "VisionAttention",
    "Qwen2_5_VLVisionAttention",
    "Qwen3VLVisionAttention",
    "Qwen3_5VisionAttention",
)


def grouped_sdpa(
    module: Any,
    query: Any,
    key: Any,
    value: Any,
    attention_mask: Any = None,
    scaling: float | None = None,
    dropout: float = 0.0,
    cu_seq_lens_q: Any = None,
    **kwargs: Any,
) -> tuple[Any, None]:
    """Attention within each piece of a packed ``(1, heads, seq, dim)`` sequence; returns ``(1, seq, heads, dim)``."""
    import torch
    import torch.nn.functional as F

    heads, seq, dim = query.shape[1], query.shape[2], query.shape[3]
    # (seq, heads, dim) is how the towers lay the tensors out; pieces are runs along seq.
    flat = [t[0].transpose(0, 1) for t in (query, key, value)]
    n = _uniform_piece_length(seq, cu_seq_lens_q, kwargs.get("max_length_q"))
    if n is None:
        bounds = cu_seq_lens_q.tolist()
        lengths = [b - a for a, b in zip(bounds, bounds[1:])]
        if len(set(lengths)) == 1:
            n = lengths[0]
    if n is not None:
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


def _uniform_piece_length(seq: int, cu_seq_lens: Any, longest: Any) -> int | None:
    """The common length of all pieces when the host already knows it, else None.

    Pieces are at most ``longest`` long and add up to ``seq``; if ``pieces x longest == seq``
    every piece has that length. Reading it this way needs nothing from the GPU.
    """
    if cu_seq_lens is None:
        return seq
    pieces = cu_seq_lens.shape[0] - 1
    if isinstance(longest, int) and pieces > 0 and longest * pieces == seq:
        return longest
    return None


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
        if (
            type(module).__name__ in _VISION_ATTENTION_CLASSES
            and getattr(config, "_attn_implementation", None) == "sdpa"
        ):
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


def compile_blocks(model: Any, vision: bool = True) -> Callable[[], None]:
    """``torch.compile`` the repeated blocks of ``model`` in place; returns the undo function.

    Always the decoder layers of the language model. The vision tower's blocks too (``vision``), when none
    of the tower's weights trains: such a tower runs under ``torch.no_grad`` while training
    (:func:`frozen_towers_without_grad`), so its blocks compile to forward-only graphs. A tower
    that trains is left eager: on an H100 a vision block failed inside torch.compile's
    forward/backward partitioning, and since every checkpointed block of transformers shares
    one wrapper function, that failure switched compilation off for the decoder layers too.
    """
    import torch
    import torch._dynamo

    from lab.model_parts import in_group, module_groups

    # A block dynamo cannot handle falls back to eager instead of failing the run.
    torch._dynamo.config.suppress_errors = True
    # Every checkpointed block of transformers runs through one wrapper function, and dynamo keeps
    # at most ``recompile_limit`` versions of a function: decoder layers and vision blocks, each
    # training and evaluating, at a fixed and then a variable length, filled the default 8 in a
    # run with evaluation, and every block ran eager from then on.
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, _RECOMPILE_LIMIT)
    language = module_groups(model)["language"]
    blocks = []
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and name.endswith(".layers") and in_group(name, language):
            blocks.extend(module)
    tower = vision_tower(model)
    if vision and tower is not None and not any(p.requires_grad for p in tower.parameters()):
        for name, module in tower.named_modules():
            if isinstance(module, torch.nn.ModuleList) and name.rsplit(".", 1)[-1] in _BLOCK_LISTS:
                blocks.extend(module)
    for block in blocks:
        # Inductor's own random numbers (the default) made a checkpointed layer draw other
        # dropout masks when it recomputed its forward pass in the backward one, so its
        # gradients were not those of its loss; PyTorch's random ops keep them consistent.
        block.compile(options={"fallback_random": True})

    def restore() -> None:
        for block in blocks:
            block._compiled_call_impl = None
        # The versions compiled for this model count against the limit of the next run in this
        # process (the app trains many times): forget them.
        torch._dynamo.reset()

    return restore


def takes_ready_causal_mask(model: Any) -> bool:
    """True where ``model``'s family attends causally within the padded batch alone, under SDPA, no sliding window."""
    from lab.families import family_name, get_family

    if not get_family(family_name(model)).causal_mask:
        return False
    config = getattr(model, "config", None)
    text = getattr(config, "text_config", None) or config
    return getattr(text, "_attn_implementation", None) == "sdpa" and not getattr(text, "use_sliding_window", False)


def ready_causal_mask(attention_mask: Any) -> Any:
    """The ``(batch, 1, length, length)`` boolean mask SDPA takes (True: attend) for a 2-D padding mask:
    each position sees itself and the positions before it that are not padding."""
    import torch

    length = attention_mask.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    return causal[None, None] & attention_mask.bool()[:, None, None, :]


def has_compiled_blocks(model: Any) -> bool:
    """True when :func:`compile_blocks` (or anything like it) compiled a module of ``model``."""
    return any(getattr(m, "_compiled_call_impl", None) is not None for m in model.modules())


def pad_for_compiled_blocks(model: Any, collator: Any) -> Callable[[], None]:
    """Pad batches to a multiple of ``COMPILED_PAD_MULTIPLE`` tokens while ``model`` has compiled blocks.

    Compiled code is specialised to the shapes it saw: each new sequence length costs a
    recompile (tens of seconds) until dynamo switches to a shape-generic version. Fewer,
    coarser lengths mean fewer of those, and the first graph stays a static one.
    Returns the function that puts the collator's padding back.
    """
    before = getattr(collator, "pad_to_multiple_of", None)
    if before is None or not has_compiled_blocks(model):
        return lambda: None
    collator.pad_to_multiple_of = max(before, COMPILED_PAD_MULTIPLE)
    return lambda: setattr(collator, "pad_to_multiple_of", before)


def vision_tower(model: Any) -> Any:
    """The module holding the vision side of ``model`` (Qwen: ``visual``, merger included), or None."""
    from lab.model_parts import module_groups

    prefixes = module_groups(model)["vision"]
    if not prefixes:
        return None
    parts = [prefix.split(".") for prefix in prefixes]
    common = []
    for names in zip(*parts):
        if len(set(names)) > 1:
            break
        common.append(names[0])
    return dict(model.named_modules()).get(".".join(common)) if common else None


def frozen_towers_without_grad(model: Any) -> Callable[[], None]:
    """Run the vision tower of ``model`` under ``torch.no_grad`` when none of its weights trains.

    Returns the function that undoes it. A tower with a trainable weight (LoRA on the vision
    side or the merger, full training of either) keeps autograd.
    """
    import torch

    tower = vision_tower(model)
    if tower is None or any(p.requires_grad for p in tower.parameters()):
        return lambda: None
    own = vars(tower)
    had_own, previous = "forward" in own, own.get("forward")
    tower.forward = torch.no_grad()(tower.forward)

    def restore() -> None:
        if had_own:
            tower.forward = previous
        else:
            own.pop("forward", None)

    return restore
