"""Loading vision-language models.

:func:`load_model` is the one way the lab loads a model (base models, merged exports,
the tiny demo models): a Hub id or a local folder through ``AutoModelForImageTextToText``
and ``AutoProcessor``, on the right device in the right dtype, optionally quantized with
bitsandbytes. Everything a person can get wrong (offline Hub id, not a model folder, custom
code, no GPU) becomes one :class:`~lab.errors.ModelLoadError` sentence.

What the parts of a loaded model are called (for freezing and LoRA) is :mod:`lab.model_parts`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import ConfigError, ModelLoadError
from lab.families import family_name
from lab.model_sources import check_trust, resolve_source
from lab.pixel_limits import set_image_pixels
from lab.quantization import keep_cpu_4bit_layout, quantization_config

_DTYPES = {
    "bf16": "bfloat16",
    "bfloat16": "bfloat16",
    "fp16": "float16",
    "float16": "float16",
    "half": "float16",
    "fp32": "float32",
    "float32": "float32",
    "float": "float32",
}


@dataclass
class LoadedModel:
    """A model ready for training or generation, with what the rest of the lab needs to know."""

    model: Any  # a transformers PreTrainedModel (AutoModelForImageTextToText)
    processor: Any  # its AutoProcessor: tokenizer + image processor (+ video processor)
    family: str  # an entry of lab.families.FAMILIES ("qwen2_5_vl", "gemma3", ...) or "other"
    name: str  # what the user asked for: a Hub id or a folder path
    device: str  # "cpu", "cuda", "cuda:1", ...
    dtype: Any  # torch.dtype of the non-quantized weights
    quantization: str | None  # None | "4bit" | "8bit"
    is_tiny: bool  # a tiny random model (lab.tiny): its answers are noise
    adapter: str | None = None  # the active LoRA adapter (= its run name); the model is then a PeftModel


def detect_family(config_or_model) -> str:
    """The family (an entry of :data:`lab.families.FAMILIES`, else ``"other"``) of a config, model or config dict."""
    return family_name(config_or_model)


def gpu_present() -> bool:
    """Whether a CUDA GPU is visible, without importing torch when it is not loaded yet.

    Pages ask this to pick defaults before any model is loaded; importing torch for it
    would hold up the first page by seconds.
    """
    import os
    import sys

    if "torch" in sys.modules:
        return sys.modules["torch"].cuda.is_available()
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return (gpus.is_dir() and any(gpus.iterdir())) or Path("/dev/nvidia0").exists()


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` when a GPU is visible, else ``"cpu"``; a GPU device without a GPU is an error."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return device
    if re.fullmatch(r"cuda(:\d+)?", device):
        if not torch.cuda.is_available():
            raise ModelLoadError(
                "Device {device!r} needs a CUDA GPU, but none is visible here; use device 'cpu'.", device=device
            )
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ModelLoadError(
                "Device {device!r} does not exist: this machine has {count} GPU(s).", device=device, count=count
            )
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError("Device 'mps' needs an Apple-silicon GPU, which is not available here.")
        return device
    raise ConfigError("Unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.", device=device)


def resolve_dtype(dtype="auto", device: str = "cpu"):
    """The torch dtype for ``dtype`` on ``device``: auto is bf16 on a bf16 GPU, fp16 on older GPUs, fp32 elsewhere."""
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    key = str(dtype or "auto").strip().lower().removeprefix("torch.")
    if key == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if key not in _DTYPES:
        raise ConfigError("Unknown dtype {dtype!r}; use 'auto', 'bf16', 'fp16' or 'fp32'.", dtype=dtype)
    return getattr(torch, _DTYPES[key])


def load_model(
    name_or_path: str | Path,
    *,
    quantization: str | None = None,
    dtype="auto",
    device: str = "auto",
    min_pixels: int | None = None,
    max_pixels: int | None = None,
    trust_remote_code: bool = False,
    attn_implementation: str = "sdpa",
    double_quant: bool = True,
    quant_compute_dtype: str = "auto",
    hub: str | None = None,
    progress=None,
) -> LoadedModel:
    """Load an image-text-to-text model and its processor from a Hub id or a local folder.

    ``quantization`` "4bit" is bitsandbytes NF4 (with double quantization unless
    ``double_quant`` is off) computing in ``quant_compute_dtype`` ("auto": bf16 on capable
    GPUs, fp32 on CPU), for QLoRA; "8bit" is LLM.int8. ``min_pixels``/``max_pixels`` bound the
    image size the processor feeds the model, through the family's own knob (see
    :func:`set_image_pixels`). A Hub id is downloaded from ``hub`` (:mod:`lab.hubs`; its
    ``progress(done, total)`` hears the bytes). ``trust_remote_code`` runs the model's own
    Python code, which a shared deployment refuses. Raises :class:`ModelLoadError` with one
    sentence for anything a person can fix.
    """
    from lab.hubs import fetch_model
    from lab.tiny import is_tiny_model

    check_trust(trust_remote_code)
    quantization = None if quantization in (None, "", "none") else quantization
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    source, is_local = resolve_source(name_or_path)
    if not is_local:
        source = fetch_model(source, hub=hub, progress=progress)
    config = _load_config(source, trust_remote_code)
    quant_config = quantization_config(
        quantization, device, double_quant=double_quant, compute_dtype=quant_compute_dtype
    )
    if attn_implementation.startswith("flash_attention") and not device.startswith("cuda"):
        raise ModelLoadError(
            "attn_implementation {attn_implementation!r} needs a CUDA GPU; use 'sdpa' on {device}.",
            attn_implementation=attn_implementation,
            device=device,
        )
    # The processor first: it is quick, and a bad pixel bound should fail before gigabytes load.
    processor = _load_processor(source, trust_remote_code)
    set_image_pixels(processor, min_pixels=min_pixels, max_pixels=max_pixels, family=detect_family(config))
    model = _load_weights(source, config, torch_dtype, device, quant_config, attn_implementation, trust_remote_code)
    if quantization == "4bit" and device == "cpu":
        keep_cpu_4bit_layout(model)
    return LoadedModel(
        model=model,
        processor=processor,
        family=detect_family(config),
        name=str(name_or_path),
        device=device,
        dtype=torch_dtype,
        quantization=quantization,
        is_tiny=is_local and is_tiny_model(source),
    )


def _load_config(source: str, trust_remote_code: bool):
    from transformers import AutoConfig, PreTrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    try:
        raw, _ = PreTrainedConfig.get_config_dict(source)
    except OSError:
        raise ModelLoadError("{source} has no readable config.json.", source=source) from None
    except ValueError as err:
        raise ModelLoadError("{source} has an unreadable config.json ({err}).", source=source, err=err) from None
    model_type = raw.get("model_type")
    if not model_type:
        raise ModelLoadError("{source} is not a model: its config.json names no model_type.", source=source)
    auto_map = raw.get("auto_map") or {}
    custom = model_type not in CONFIG_MAPPING
    if custom and auto_map and not trust_remote_code:
        raise _needs_trust(source, model_type)
    if custom and not auto_map:
        raise ModelLoadError(
            "{source} has model type {model_type!r}, which this version of transformers does not know.",
            source=source,
            model_type=model_type,
        )
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError) as err:
        raise ModelLoadError(
            "Could not read the config of {source}: {first_line}", source=source, first_line=_first_line(err)
        ) from None
    if type(config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:
        return config
    if "AutoModelForImageTextToText" in auto_map:
        if not trust_remote_code:
            raise _needs_trust(source, model_type)
        return config
    raise ModelLoadError(
        "{source} is a {model_type!r} model, not an image-text-to-text (vision-language) model the lab can load.",
        source=source,
        model_type=model_type,
    )


def _needs_trust(source: str, model_type: str) -> ModelLoadError:
    return ModelLoadError(
        "{source} runs its own Python code (model type {model_type!r}); load it only if you trust its author, "
        "with trust_remote_code=True (the --trust-remote-code flag, or Trust remote code on the page).",
        source=source,
        model_type=model_type,
    )


def _load_weights(source, config, torch_dtype, device, quant_config, attn_implementation, trust_remote_code):
    import torch
    from transformers import AutoModelForImageTextToText

    kwargs = dict(
        config=config,
        dtype=torch_dtype,
        device_map={"": torch.device(device)},
        trust_remote_code=trust_remote_code,
        quantization_config=quant_config,
    )
    try:
        try:
            return AutoModelForImageTextToText.from_pretrained(
                source, attn_implementation=attn_implementation, **kwargs
            )
        except (ValueError, ImportError) as err:
            # Models without an SDPA path still load with the reference attention.
            if attn_implementation != "sdpa" or "sdpa" not in str(err).lower():
                raise
            return AutoModelForImageTextToText.from_pretrained(source, attn_implementation="eager", **kwargs)
    except torch.OutOfMemoryError:
        raise ModelLoadError(
            "Not enough memory on {device} to load {source} in {dtype}; try 4-bit quantization or a smaller model.",
            device=device,
            source=source,
            dtype=str(torch_dtype).removeprefix("torch."),
        ) from None
    except (OSError, ValueError, ImportError, RuntimeError) as err:
        raise ModelLoadError(
            "Could not load the weights of {source}: {first_line}", source=source, first_line=_first_line(err)
        ) from None


def _load_processor(source: str, trust_remote_code: bool):
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError, TypeError) as err:
        raise ModelLoadError(
            "Could not load the processor of {source}: {first_line}", source=source, first_line=_first_line(err)
        ) from None
    if getattr(processor, "image_processor", None) is None:
        raise ModelLoadError("{source} has no image processor, so it cannot read images.", source=source)
    return processor


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300].rstrip(".") + "."
