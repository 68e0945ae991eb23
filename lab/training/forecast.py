"""Memory and time of a training step before anything loads, from the model's architecture alone.

The architecture (:class:`Arch`) comes from a ``config.json`` (:mod:`lab.training.sizes` finds
it); a :class:`Job` is what one GPU does in a step: method, which parts train, dtype, batch
and the longest and mean sample; a :class:`Card` is a GPU's memory and matrix-multiply rate.
:func:`forecast` counts bytes the way the lab trains (:mod:`lab.training.trainer`)::

    weights        bf16/fp16 (fp32 on the CPU), QLoRA's linear layers at 4 or 8 bits
    trainable      LoRA in float32 (PEFT keeps adapters in float32 under autocast): weight, gradient,
                   AdamW's m and v = 16 bytes a parameter; full training: weight, gradient, m and v in the
                   weights' own dtype (torch's AdamW keeps its states in the parameter's dtype; a float16
                   run trains float32 master weights, see runner.load_options)
    activations    per token and decoder layer, from hidden and intermediate sizes; with
                   recomputation only each layer's input is kept, plus one layer recomputed in full
    logits         only the answer tokens are projected onto the vocabulary: bf16 logits, their
                   picked rows, the float32 copy and its log-softmax (2a + 8 bytes a logit)

and time as matrix-multiply FLOPs (2 per weight and token forward, 2 more for the activations'
gradients, 2 for a trained weight's gradient, 2 again to recompute) at the card's rate times an
efficiency, but never less than the host's time to launch a step's kernels. No torch here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

GIB = 2**30

# ---------------------------------------------------------------- calibration, in one place
# From the measurements in BENCHMARKS.md (bench/train.py, one H200, Qwen2.5-VL-3B architecture, LoRA r 8 on the
# language model, vision frozen, bf16, recomputation on, ~426-token samples): batch 4 ran at ~4,560 tokens/s
# (0.374 s a step) and peaked at 8.4 GiB; batch 16 ran at 15,472 tokens/s (0.441 s) at 11.8 GiB; QLoRA on the 7B
# architecture at batch 4 ran at ~1,700 tokens/s (1.00 s) at 7.0-7.35 GiB. Batch 4 is bound by the host launching
# kernels (BENCHMARKS.md: the GPU is busy 0.13 s of a 0.35 s step), so its step time, divided by the layers,
# is the host's time per layer; batch 16 is bound by the GPU, and its FLOPs over its step time are the efficiency.
# bench/forecast.py prints forecast against measured peak and tokens/s to re-calibrate these.
MATMUL_EFFICIENCY = 0.32  # share of the card's dense bf16 peak a step reaches: 3B LoRA batch 16 on an H200
HOST_SECONDS_PER_LAYER = {"lora": 0.0104, "qlora": 0.0358, "full": 0.0104}  # with recomputation; full: LoRA's,
# not measured yet. Without recomputation the backward pass launches no forward again: 3/4 of the kernels.
CONTEXT_GIB = 0.6  # CUDA context and cuBLAS workspace: taken from the card, not counted by max_memory_allocated
FRAGMENTATION = 1.05  # the caching allocator reserves a little more than it hands out
FIT_MARGIN = 0.10  # a choice must leave this share of the card's free memory unused


@dataclass(frozen=True)
class Card:
    """A GPU: its memory and its dense matrix-multiply peak (bf16, or fp16 on cards without bf16)."""

    name: str
    memory_gib: float
    tflops: float
    bf16: bool = True


# Memory as the driver reports it; dense (not sparse) tensor-core peaks from the vendor's data sheets.
CARDS = {
    "h200": Card("NVIDIA H200", 140.4, 989.0),
    "h100-80g": Card("NVIDIA H100 80GB", 79.2, 989.0),
    "a100-80g": Card("NVIDIA A100 80GB", 79.2, 312.0),
    "a100-40g": Card("NVIDIA A100 40GB", 39.4, 312.0),
    "l40s": Card("NVIDIA L40S", 44.4, 362.0),
    "a10g": Card("NVIDIA A10G", 22.0, 70.0),
    "4090": Card("NVIDIA GeForce RTX 4090", 23.6, 165.0),
    "3090": Card("NVIDIA GeForce RTX 3090", 23.6, 71.0),
    "t4": Card("NVIDIA T4", 14.6, 65.0, bf16=False),
}


@dataclass(frozen=True)
class Arch:
    """What memory and time depend on in a Qwen-VL-style model (``config.json`` values)."""

    model_type: str
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    vision_hidden: int
    vision_intermediate: int
    vision_depth: int
    vision_swiglu: bool  # Qwen2.5-VL's gated MLP (three matrices) against a plain two-matrix MLP
    patch: int
    merge: int
    vision_out: int
    temporal_patch: int = 2

    @property
    def factor(self) -> int:
        """Pixels along one side of an image token (patch x merge)."""
        return self.patch * self.merge


@dataclass(frozen=True)
class Job:
    """What one GPU does in a step. Lengths are tokens (text + image); ``answer`` tokens are the learned ones."""

    method: str = "lora"
    lora_rank: int = 8
    lora_targets: tuple[str, ...] = ("language",)
    full_parts: tuple[str, ...] = ()  # parts whose own weights train (train_<part>, or method full)
    dtype_bytes: int = 2
    quant_bits: int = 4
    double_quant: bool = True
    batch: int = 1
    max_tokens: int = 512
    mean_tokens: float = 512
    max_answer: int = 128
    mean_answer: float = 128
    image_share: float = 0.5  # share of a sample's tokens that are image tokens
    checkpointing: bool = True
    num_gpus: int = 1
    deepspeed: str | None = None


@dataclass
class Forecast:
    """Peak GPU memory (GiB, by part) and speed of one job on one card (``card`` None: no time forecast)."""

    job: Job
    card: Card | None
    parts: dict = field(default_factory=dict)  # GiB: weights, trainable, activations, logits
    step_seconds: float | None = None
    tokens_per_s: float | None = None  # all GPUs together

    @property
    def allocated_gib(self) -> float:
        """What ``torch.cuda.max_memory_allocated`` should show."""
        return sum(self.parts.values())

    @property
    def needed_gib(self) -> float:
        """What the card must have free: the peak, the allocator's slack and the CUDA context."""
        return self.allocated_gib * FRAGMENTATION + CONTEXT_GIB


# ---------------------------------------------------------------- parameters


def language_linear(a: Arch) -> int:
    """Weights of the linear layers of one decoder layer."""
    q = a.heads * a.head_dim
    kv = a.kv_heads * a.head_dim
    return a.hidden * q * 2 + 2 * a.hidden * kv + 3 * a.hidden * a.intermediate


def vision_block_linear(a: Arch) -> int:
    d = a.vision_hidden
    return 4 * d * d + (3 if a.vision_swiglu else 2) * d * a.vision_intermediate


def merger_linear(a: Arch) -> int:
    wide = a.vision_hidden * a.merge**2
    return wide * wide + wide * a.vision_out


def part_params(a: Arch) -> dict[str, int]:
    """Parameters of each part (norms and biases are a rounding error and left out)."""
    embeddings = a.vocab * a.hidden * (1 if a.tied else 2)
    patch_embed = 3 * a.temporal_patch * a.patch**2 * a.vision_hidden
    return {
        "language": a.layers * language_linear(a) + embeddings,
        "vision": a.vision_depth * vision_block_linear(a) + patch_embed,
        "merger": merger_linear(a),
    }


def lora_params(a: Arch, rank: int, targets) -> int:
    """LoRA weights (A and B, rank x (in + out) per linear layer) on the parts in ``targets``."""
    q, kv, h, i = a.heads * a.head_dim, a.kv_heads * a.head_dim, a.hidden, a.intermediate
    per = {
        "language": a.layers * ((h + q) * 2 + (h + kv) * 2 + 3 * (h + i)),
        "vision": a.vision_depth
        * (a.vision_hidden * 6 + (3 if a.vision_swiglu else 2) * (a.vision_hidden + a.vision_intermediate)),
        "merger": a.vision_hidden * a.merge**2 * 3 + a.vision_out,
    }
    return rank * sum(per[part] for part in targets)


# ---------------------------------------------------------------- memory


def _quantized_bytes(job: Job) -> float:
    """Bytes a quantized weight takes: NF4 with an fp32 scale per 64 (8-bit scales with double quantization)."""
    if job.quant_bits == 8:
        return 1.0 + 4 / 64
    return 0.5 + ((1 + 4 / 256) / 64 if job.double_quant else 4 / 64)


def weight_bytes(a: Arch, job: Job) -> float:
    """The model's weights as loaded (QLoRA: the linear layers quantized, embeddings and the output kept)."""
    params = part_params(a)
    total = sum(params.values())
    if job.method != "qlora":
        return total * job.dtype_bytes
    linear = a.layers * language_linear(a) + a.vision_depth * vision_block_linear(a) + merger_linear(a)
    return linear * _quantized_bytes(job) + (total - linear) * job.dtype_bytes


def trainable_bytes(a: Arch, job: Job) -> float:
    """Trained weights' gradients and AdamW states (and PEFT's trainable copy of a part trained next to LoRA)."""
    params = part_params(a)
    full = sum(params[p] for p in job.full_parts)
    if job.method == "full":
        states = full * job.dtype_bytes * 3  # gradient, m, v (the weight itself is in weight_bytes)
    else:
        states = lora_params(a, job.lora_rank, job.lora_targets) * 16 + full * job.dtype_bytes * 4
    if job.deepspeed in ("zero2", "zero3"):
        states /= job.num_gpus
    elif job.deepspeed == "zero3_offload":
        states = 0.0  # optimizer states and master weights live in CPU memory
    return states


def _layer_elements(hidden: int, intermediate: int, kv: int) -> int:
    """Activation elements one token leaves in a decoder layer for the backward pass: norms (with their float32
    upcasts), attention's inputs and outputs, adapters' dropout copies, and the MLP's gate, up, product and input."""
    return 18 * hidden + 5 * intermediate + 4 * kv


def activation_bytes(a: Arch, job: Job) -> tuple[float, float]:
    """``(activations, logits)`` bytes of the step's longest batch (every sample padded to the longest)."""
    act = job.dtype_bytes
    tokens = job.batch * job.max_tokens
    full_layer = _layer_elements(a.hidden, a.intermediate, a.kv_heads * a.head_dim) * act
    if job.checkpointing:
        per_token = a.layers * a.hidden * act + full_layer
    else:
        per_token = a.layers * full_layer
    activations = tokens * per_token
    vision_trains = set(job.full_parts) & {"vision", "merger"} or set(job.lora_targets) & {"vision", "merger"}
    if vision_trains and job.method != "full" or "vision" in job.full_parts:
        patches = tokens * job.image_share * a.merge**2
        block = _layer_elements(a.vision_hidden, a.vision_intermediate, a.vision_hidden) * act
        per_patch = (a.vision_depth * a.vision_hidden * act + block) if job.checkpointing else a.vision_depth * block
        activations += patches * per_patch
    if job.method == "qlora":
        activations += a.hidden * a.intermediate * act  # one weight dequantized at a time
    logits = job.batch * job.max_answer * a.vocab * (2 * act + 8)
    return activations, logits


def memory_parts(a: Arch, job: Job) -> dict[str, float]:
    """GiB of each part of the peak on one GPU."""
    weights = weight_bytes(a, job)
    if job.deepspeed in ("zero3", "zero3_offload"):
        weights /= job.num_gpus
    activations, logits = activation_bytes(a, job)
    return {
        "weights": weights / GIB,
        "trainable": trainable_bytes(a, job) / GIB,
        "activations": activations / GIB,
        "logits": logits / GIB,
    }


# ---------------------------------------------------------------- time


def flops_per_sample(a: Arch, job: Job) -> float:
    """Matrix-multiply FLOPs of one mean sample's forward and backward pass."""
    tokens, answer = job.mean_tokens, job.mean_answer
    recompute = 2 if job.checkpointing else 0
    layers = a.layers * language_linear(a)
    language_trains = "language" in job.full_parts
    flops = tokens * layers * (4 + recompute + (2 if language_trains else 0))
    flops += tokens * a.layers * 4 * tokens * a.heads * a.head_dim * (3 + recompute / 2) / 2  # attention, causal
    flops += answer * a.vocab * a.hidden * (4 + (2 if language_trains else 0))
    lora = lora_params(a, job.lora_rank, job.lora_targets) if job.method != "full" else 0
    flops += tokens * 6 * lora
    patches = tokens * job.image_share * a.merge**2
    vision = a.vision_depth * vision_block_linear(a) + merger_linear(a) / a.merge**2
    vision_trains = set(job.full_parts) & {"vision", "merger"} or set(job.lora_targets) & {"vision", "merger"}
    flops += patches * vision * ((6 + recompute) if vision_trains else 2)
    return flops


def step_seconds(a: Arch, job: Job, card: Card) -> float:
    """One micro-batch: the GPU's time, or the host's time to launch it when that is longer."""
    gpu = flops_per_sample(a, job) * job.batch / (card.tflops * 1e12 * MATMUL_EFFICIENCY)
    host = HOST_SECONDS_PER_LAYER[job.method] * a.layers * (1.0 if job.checkpointing else 0.75)
    return max(gpu, host)


def forecast(a: Arch, job: Job, card: Card | None = None) -> Forecast:
    """Peak memory of ``job`` on one GPU, and its speed on ``card`` when one is given."""
    result = Forecast(job=job, card=card, parts=memory_parts(a, job))
    if card is not None:
        result.step_seconds = step_seconds(a, job, card)
        result.tokens_per_s = job.batch * job.mean_tokens * job.num_gpus / result.step_seconds
    return result


def fits(result: Forecast, free_gib: float) -> bool:
    """Whether the forecast leaves :data:`FIT_MARGIN` of ``free_gib`` unused."""
    return result.needed_gib <= free_gib * (1 - FIT_MARGIN)


def epoch_seconds(result: Forecast, samples: int) -> float | None:
    """Seconds for one pass over ``samples`` training samples, when the forecast has a speed."""
    if result.tokens_per_s is None:
        return None
    return samples * result.job.mean_tokens / result.tokens_per_s


def with_batch(job: Job, batch: int, checkpointing: bool | None = None) -> Job:
    return replace(job, batch=batch, checkpointing=job.checkpointing if checkpointing is None else checkpointing)


def largest_batch(a: Arch, job: Job, free_gib: float, limit: int, candidates=None) -> int:
    """The largest batch (of ``candidates``, else 1..``limit``) whose forecast fits ``free_gib``; 0 when none does."""
    best = 0
    for batch in sorted(candidates or range(1, limit + 1)):
        if batch > limit:
            break
        if not fits(forecast(a, with_batch(job, batch)), free_gib):
            break  # memory grows with the batch
        best = batch
    return best


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0] if n > 0 else [1]


def round_gib(value: float) -> float:
    return math.ceil(value * 10) / 10
