"""Quantizing a model with bitsandbytes (QLoRA, 4-bit or 8-bit loading): whether it works here, and how.

:func:`bitsandbytes_problem` runs one real quantized layer on the device, so a missing
package or a backend that cannot run there is one sentence before anything loads.
"""

from __future__ import annotations

import functools

from lab.errors import ConfigError, ModelLoadError
from lab.text import Msg


def quantization_config(
    quantization: str | None, device: str, *, double_quant: bool = True, compute_dtype: str = "auto"
):
    """The ``BitsAndBytesConfig`` for "4bit" / "8bit" on ``device`` (None for no quantization)."""
    import torch

    from lab.models import resolve_dtype

    if quantization in (None, "", "none"):
        return None
    if quantization not in ("4bit", "8bit"):
        raise ConfigError(
            "Unknown quantization {quantization!r}; use '4bit', '8bit' or none.", quantization=quantization
        )
    if not (device == "cpu" or device.startswith("cuda")):
        raise ModelLoadError(
            "{quantization} quantization needs a CUDA GPU or the CPU, not {device!r}.",
            quantization=quantization,
            device=device,
        )
    reason = bitsandbytes_problem(quantization, device)
    if reason:
        raise ModelLoadError(
            "{quantization} quantization does not work here ({reason}); it needs a CUDA GPU with bitsandbytes "
            "installed.",
            quantization=quantization,
            reason=reason,
        )
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if compute_dtype in (None, "", "auto"):
        compute = torch.float32 if device == "cpu" else resolve_dtype("auto", device)
    else:
        compute = resolve_dtype(compute_dtype, device)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=double_quant,
        bnb_4bit_compute_dtype=compute,
    )


@functools.cache
def keep_cpu_4bit_layout(model) -> None:
    """Stop bitsandbytes from repacking 4-bit weights for its AVX512-BF16 CPU kernel.

    From bitsandbytes 0.50, a ``Linear4bit`` on a CPU with AVX512-BF16 rewrites its weight
    in place into a packed layout the first time it runs in eval mode without gradients.
    That layout needs ``in_features`` of at least the quantization block (64), so narrower
    layers (the demo model's vision tower) crash with ``shape '[96, 0]' is invalid``; and a
    layer once packed can no longer be trained (``a view of a leaf Variable ... in-place``),
    so a QLoRA run died at its first step after a mid-run evaluation. The plain layout works
    for every shape, in training and inference alike.
    """
    import bitsandbytes as bnb

    for module in model.modules():
        if isinstance(module, bnb.nn.Linear4bit):
            module.support_avx512bf16_for_cpu = False


def bitsandbytes_problem(quantization: str, device: str) -> Msg | None:
    """Why bitsandbytes cannot quantize on ``device`` (None when a real quantized layer runs there)."""
    import torch

    try:
        import bitsandbytes as bnb
    except ImportError:
        return Msg("the bitsandbytes package is not installed")
    try:
        with torch.random.fork_rng(devices=[]):  # the probe's random init must not shift the caller's seed
            if quantization == "4bit":
                layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
                x = torch.ones(2, 64)
            else:
                layer = bnb.nn.Linear8bitLt(64, 64, bias=False, has_fp16_weights=False)
                x = torch.ones(2, 64, dtype=torch.float16)
        layer = layer.to(device)  # quantizes the weight on the device
        layer(x.to(device))
    except Exception as err:  # any failure of the backend means the same thing to the user
        detail = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        return Msg(
            "bitsandbytes cannot run {quantization} layers on {device}: {detail}",
            quantization=quantization,
            device=device,
            detail=detail,
        )
    return None
