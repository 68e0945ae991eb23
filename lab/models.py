"""Loading vision-language models and naming their parts.

:func:`load_model` is the one way the lab loads a model (base models, merged exports,
the tiny demo models): a Hub id or a local folder through ``AutoModelForImageTextToText``
and ``AutoProcessor``, on the right device in the right dtype, optionally quantized with
bitsandbytes. Everything a person can get wrong (offline Hub id, not a model folder, custom
code, no GPU) becomes one :class:`~lab.errors.ModelLoadError` sentence.

:func:`module_groups` and :func:`lora_target_modules` name the three parts of a VLM
(vision tower, merger/projector, language model) from the real module tree, so freezing
and LoRA hit exactly the part asked for. A bare ``["q_proj", ..., "down_proj"]`` list is
not enough: Qwen2.5-VL's vision blocks have ``gate_proj/up_proj/down_proj`` too.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.errors import ConfigError, ModelLoadError
from lab.paths import check_allowed

QWEN_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")
PARTS = ("vision", "merger", "language")

# Attribute names transformers uses for the parts of its VLMs (see PreTrainedModel.get_encoder /
# get_decoder); the first match from the root of the module tree wins.
_VISION_NAMES = ("visual", "vision_tower", "vision_model", "vision_encoder", "image_tower", "vpm")
_LANGUAGE_NAMES = ("language_model", "text_model", "llm", "decoder", "text_decoder")
_MERGER_NAMES = ("merger", "deepstack_merger_list", "multi_modal_projector", "mm_projector", "connector",
                 "projector", "visual_projection", "aligner", "mlp1", "resampler")

_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp16": "float16", "float16": "float16", "half": "float16",
           "fp32": "float32", "float32": "float32", "float": "float32"}


@dataclass
class LoadedModel:
    """A model ready for training or generation, with what the rest of the lab needs to know."""

    model: Any  # a transformers PreTrainedModel (AutoModelForImageTextToText)
    processor: Any  # its AutoProcessor: tokenizer + image processor (+ video processor)
    family: str  # "qwen2_vl" | "qwen2_5_vl" | "qwen3_vl" | "other"
    name: str  # what the user asked for: a Hub id or a folder path
    device: str  # "cpu", "cuda", "cuda:1", ...
    dtype: Any  # torch.dtype of the non-quantized weights
    quantization: str | None  # None | "4bit" | "8bit"
    is_tiny: bool  # a tiny random model (lab.tiny): its answers are noise
    adapter: str | None = None  # the active LoRA adapter (= its run name); the model is then a PeftModel


def detect_family(config_or_model) -> str:
    """``"qwen2_vl"``, ``"qwen2_5_vl"``, ``"qwen3_vl"`` or ``"other"`` from a config, model or config dict."""
    config = getattr(config_or_model, "config", config_or_model)
    if isinstance(config, dict):
        model_type = config.get("model_type")
    else:
        model_type = getattr(config, "model_type", None)
    return model_type if model_type in QWEN_FAMILIES else "other"


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
            raise ModelLoadError(f"Device {device!r} needs a CUDA GPU, but none is visible here; use device 'cpu'.")
        index = int(device.split(":")[1]) if ":" in device else 0
        if index >= torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ModelLoadError(f"Device {device!r} does not exist: this machine has {count} GPU(s).")
        return device
    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ModelLoadError("Device 'mps' needs an Apple-silicon GPU, which is not available here.")
        return device
    raise ConfigError(f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'.")


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
        raise ConfigError(f"Unknown dtype {dtype!r}; use 'auto', 'bf16', 'fp16' or 'fp32'.")
    return getattr(torch, _DTYPES[key])


def module_groups(model) -> dict[str, list[str]]:
    """Module-name prefixes of each part: ``{"vision": [...], "merger": [...], "language": [...]}``.

    A parameter belongs to a part when its name equals a prefix or starts with ``prefix + "."``
    (see :func:`in_group`). "language" includes ``lm_head``, so freezing the language model
    freezes its output layer too. For Qwen2.5-VL: vision ``model.visual.patch_embed``,
    ``model.visual.rotary_pos_emb``, ``model.visual.blocks``; merger ``model.visual.merger``;
    language ``model.language_model``, ``lm_head``.
    """
    modules = dict(model.named_modules())
    vision_root = _find_root(modules, _VISION_NAMES)
    language_root = _find_root(modules, _LANGUAGE_NAMES) or _name_of(modules, _call(model, "get_decoder"))
    if language_root is None:
        raise ModelLoadError(f"Cannot find the language model inside {type(model).__name__}.")
    mergers: list[str] = []
    for name in modules:
        if name.rsplit(".", 1)[-1] in _MERGER_NAMES and not any(in_group(name, [m]) for m in mergers):
            if not in_group(name, [language_root]):
                mergers.append(name)
    vision: list[str] = []
    if vision_root is not None:
        inner = [m for m in mergers if in_group(m, [vision_root])]
        if inner:
            # The merger lives inside the vision tower (Qwen): the tower is its other children.
            root = modules[vision_root]
            vision = [f"{vision_root}.{child}" for child, _ in root.named_children()
                      if not any(in_group(m, [f"{vision_root}.{child}"]) for m in inner)]
            vision += [f"{vision_root}.{p}" for p, _ in root.named_parameters(recurse=False)]
        else:
            vision = [vision_root]
    language = [language_root]
    lm_head = _name_of(modules, _call(model, "get_output_embeddings"))
    if lm_head and not in_group(lm_head, language):
        language.append(lm_head)
    return {"vision": vision, "merger": mergers, "language": language}


def in_group(name: str, prefixes: list[str]) -> bool:
    """True when module or parameter ``name`` lies under one of ``prefixes``."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def lora_target_modules(model, parts: set[str]) -> str:
    """A regex (matched with ``re.fullmatch``, as PEFT does) hitting every linear layer of ``parts`` and nothing else.

    ``parts`` is a subset of {"vision", "merger", "language"}; ``lm_head`` is never a target.
    Call it on the base model, before PEFT wraps it. For Qwen2.5-VL's language model:
    ``model\\.language_model\\.layers\\.\\d+\\.mlp\\.(?:down_proj|gate_proj|up_proj)|...``.
    """
    import torch

    parts = set(parts)
    unknown = parts - set(PARTS)
    if not parts or unknown:
        raise ConfigError(f"LoRA parts must be a non-empty subset of {', '.join(PARTS)} (got {sorted(parts)}).")
    groups = module_groups(model)
    empty = sorted(p for p in parts if not groups[p])
    if empty:
        raise ConfigError(f"This model has no {' or '.join(empty)} part to put LoRA adapters on.")
    prefixes = [prefix for part in parts for prefix in groups[part]]
    modules = dict(model.named_modules())
    lm_head = _name_of(modules, _call(model, "get_output_embeddings"))
    targets = sorted(
        name
        for name, module in modules.items()
        if isinstance(module, torch.nn.Linear) and name != lm_head and in_group(name, prefixes)
    )
    return _compact_regex(targets, list(modules))


def _compact_regex(targets: list[str], all_names: list[str]) -> str:
    """One alternation per parent module, layer numbers generalised to ``\\d+``.

    Falls back to the literal names if generalising would also match a module that is not a
    target (a model whose layers differ in structure).
    """
    children: dict[str, set[str]] = {}
    for name in targets:
        parent, _, leaf = name.rpartition(".")
        template = r"\.".join(r"\d+" if part.isdigit() else re.escape(part) for part in parent.split("."))
        children.setdefault(template, set()).add(re.escape(leaf))
    pattern = "|".join(
        f"{parent}\\.(?:{'|'.join(sorted(leaves))})" if parent else f"(?:{'|'.join(sorted(leaves))})"
        for parent, leaves in sorted(children.items())
    )
    compiled = re.compile(pattern)
    if {n for n in all_names if compiled.fullmatch(n)} == set(targets):
        return pattern
    return "|".join(re.escape(name) for name in targets)


def _find_root(modules: dict, names: tuple[str, ...]) -> str | None:
    found = [n for n in modules if n and n.rsplit(".", 1)[-1] in names]
    return min(found, key=lambda n: (n.count("."), n)) if found else None


def _name_of(modules: dict, module) -> str | None:
    if module is None:
        return None
    return next((name for name, m in modules.items() if m is module and name), None)


def _call(model, method: str):
    try:
        return getattr(model, method)()
    except (AttributeError, NotImplementedError, TypeError, ValueError):
        return None


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
) -> LoadedModel:
    """Load an image-text-to-text model and its processor from a Hub id or a local folder.

    ``quantization`` "4bit" is bitsandbytes NF4 (with double quantization unless
    ``double_quant`` is off) computing in ``quant_compute_dtype`` ("auto": bf16 on capable
    GPUs, fp32 on CPU), for QLoRA; "8bit" is LLM.int8. ``min_pixels``/``max_pixels`` bound the
    image size the processor feeds the model (Qwen-VL style processors). Raises
    :class:`ModelLoadError` with one sentence for anything a person can fix.
    """
    from lab.tiny import is_tiny_model

    quantization = None if quantization in (None, "", "none") else quantization
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    source, is_local = _resolve_source(name_or_path)
    config = _load_config(source, trust_remote_code)
    quant_config = quantization_config(quantization, device, double_quant=double_quant, compute_dtype=quant_compute_dtype)
    if attn_implementation.startswith("flash_attention") and not device.startswith("cuda"):
        raise ModelLoadError(f"attn_implementation {attn_implementation!r} needs a CUDA GPU; use 'sdpa' on {device}.")
    # The processor first: it is quick, and a bad pixel bound should fail before gigabytes load.
    processor = _load_processor(source, trust_remote_code)
    set_image_pixels(processor, min_pixels=min_pixels, max_pixels=max_pixels)
    model = _load_weights(source, config, torch_dtype, device, quant_config, attn_implementation, trust_remote_code)
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


def quantization_config(quantization: str | None, device: str, *, double_quant: bool = True, compute_dtype: str = "auto"):
    """The ``BitsAndBytesConfig`` for "4bit" / "8bit" on ``device`` (None for no quantization)."""
    import torch

    if quantization in (None, "", "none"):
        return None
    if quantization not in ("4bit", "8bit"):
        raise ConfigError(f"Unknown quantization {quantization!r}; use '4bit', '8bit' or none.")
    if not (device == "cpu" or device.startswith("cuda")):
        raise ModelLoadError(f"{quantization} quantization needs a CUDA GPU or the CPU, not {device!r}.")
    reason = _bitsandbytes_problem(quantization, device)
    if reason:
        raise ModelLoadError(
            f"{quantization} quantization does not work here ({reason}); it needs a CUDA GPU with bitsandbytes installed."
        )
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    if compute_dtype in (None, "", "auto"):
        compute = torch.float32 if device == "cpu" else resolve_dtype("auto", device)
    else:
        compute = resolve_dtype(compute_dtype, device)
    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=double_quant, bnb_4bit_compute_dtype=compute
    )


@functools.lru_cache(maxsize=None)
def _bitsandbytes_problem(quantization: str, device: str) -> str | None:
    """Why bitsandbytes cannot quantize on ``device`` (None when a real quantized layer runs there)."""
    import torch

    try:
        import bitsandbytes as bnb
    except ImportError:
        return "the bitsandbytes package is not installed"
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
        return f"bitsandbytes cannot run {quantization} layers on {device}: {str(err).splitlines()[0][:200]}"
    return None


def set_image_pixels(processor, *, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
    """Bound the pixels per image a Qwen-VL style image processor keeps (fewer pixels: fewer image tokens)."""
    if min_pixels is None and max_pixels is None:
        return
    for value in (min_pixels, max_pixels):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ConfigError(f"min_pixels and max_pixels must be positive whole numbers (got {value!r}).")
    if min_pixels and max_pixels and min_pixels > max_pixels:
        raise ConfigError(f"min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels}).")
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    if size is None or getattr(size, "longest_edge", None) is None or not hasattr(image_processor, "merge_size"):
        raise ConfigError(
            "min_pixels/max_pixels only apply to Qwen-VL style processors; leave them empty for this model."
        )
    bounds = {"shortest_edge": size.shortest_edge, "longest_edge": size.longest_edge}
    if min_pixels is not None:
        bounds["shortest_edge"] = min_pixels
    if max_pixels is not None:
        bounds["longest_edge"] = max_pixels
    if bounds["shortest_edge"] > bounds["longest_edge"]:
        low, high = bounds["shortest_edge"], bounds["longest_edge"]
        raise ConfigError(f"min_pixels ({low}) is larger than max_pixels ({high}).")
    image_processor.size = type(size)(**bounds)


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def _resolve_source(name_or_path: str | Path) -> tuple[str, bool]:
    """``(source, is_local)``: a checked local folder, or a name that can only be a Hub id."""
    name = str(name_or_path).strip()
    if not name:
        raise ModelLoadError("No model given: pass a Hub id like Qwen/Qwen2.5-VL-3B-Instruct or a local folder path.")
    path = Path(name).expanduser()
    if path.exists():
        check_allowed(path)
        if not path.is_dir():
            raise ModelLoadError(f"{path} is a file, not a model folder; pass the folder that holds config.json.")
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"{path} is not a model folder: it has no config.json.")
        return str(path.resolve()), True
    if _HUB_ID.fullmatch(name) and not name.startswith("."):
        return name, False
    raise ModelLoadError(f"Model folder {name} does not exist.")


def _load_config(source: str, trust_remote_code: bool):
    from transformers import AutoConfig, PreTrainedConfig
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING

    try:
        raw, _ = PreTrainedConfig.get_config_dict(source)
    except OSError:
        raise ModelLoadError(
            f"Could not find {source} on this machine or download it from the Hugging Face Hub (offline?); "
            f"download it once (hf download {source} --local-dir DIR) and pass the local folder path."
        ) from None
    except ValueError as err:
        raise ModelLoadError(f"{source} has an unreadable config.json ({err}).") from None
    model_type = raw.get("model_type")
    if not model_type:
        raise ModelLoadError(f"{source} is not a model: its config.json names no model_type.")
    auto_map = raw.get("auto_map") or {}
    custom = model_type not in CONFIG_MAPPING
    if custom and auto_map and not trust_remote_code:
        raise _needs_trust(source, model_type)
    if custom and not auto_map:
        raise ModelLoadError(
            f"{source} has model type {model_type!r}, which this version of transformers does not know."
        )
    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError) as err:
        raise ModelLoadError(f"Could not read the config of {source}: {_first_line(err)}") from None
    if type(config) in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING:
        return config
    if "AutoModelForImageTextToText" in auto_map:
        if not trust_remote_code:
            raise _needs_trust(source, model_type)
        return config
    raise ModelLoadError(
        f"{source} is a {model_type!r} model, not an image-text-to-text (vision-language) model the lab can load."
    )


def _needs_trust(source: str, model_type: str) -> ModelLoadError:
    return ModelLoadError(
        f"{source} runs its own Python code (model type {model_type!r}); load it only if you trust its author, "
        "with trust_remote_code=True (--trust-remote-code)."
    )


def _load_weights(source, config, torch_dtype, device, quant_config, attn_implementation, trust_remote_code):
    import torch
    from transformers import AutoModelForImageTextToText

    kwargs = dict(config=config, dtype=torch_dtype, device_map={"": torch.device(device)},
                  trust_remote_code=trust_remote_code, quantization_config=quant_config)
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
            f"Not enough memory on {device} to load {source} in {str(torch_dtype).removeprefix('torch.')}; "
            "try 4-bit quantization or a smaller model."
        ) from None
    except (OSError, ValueError, ImportError, RuntimeError) as err:
        raise ModelLoadError(f"Could not load the weights of {source}: {_first_line(err)}") from None


def _load_processor(source: str, trust_remote_code: bool):
    from transformers import AutoProcessor

    try:
        processor = AutoProcessor.from_pretrained(source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, ImportError, TypeError) as err:
        raise ModelLoadError(f"Could not load the processor of {source}: {_first_line(err)}") from None
    if getattr(processor, "image_processor", None) is None:
        raise ModelLoadError(f"{source} has no image processor, so it cannot read images.")
    return processor


def _first_line(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return (text[0] if text else type(err).__name__)[:300].rstrip(".") + "."
