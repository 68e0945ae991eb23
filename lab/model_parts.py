"""Naming the parts of a vision-language model: vision tower, merger/projector, language model.

:func:`module_groups` finds the three parts, so freezing and LoRA hit exactly the part asked
for: a family of :mod:`lab.families` names its parts' module paths; any other model's parts
are found in its module tree by the names transformers uses. :func:`lora_target_modules`
turns the parts into the regex PEFT matches. A bare ``["q_proj", ..., "down_proj"]`` list is
not enough: Qwen2.5-VL's vision blocks have ``gate_proj/up_proj/down_proj`` too.
"""

from __future__ import annotations

import re

from lab.errors import ConfigError, ModelLoadError
from lab.families import family_name, get_family
from lab.text import Msg, join

PARTS = ("vision", "merger", "language")

# Attribute names transformers uses for the parts of its VLMs (see PreTrainedModel.get_encoder /
# get_decoder); the first match from the root of the module tree wins.
_VISION_NAMES = ("visual", "vision_tower", "vision_model", "vision_encoder", "image_tower", "vpm")
_LANGUAGE_NAMES = ("language_model", "text_model", "llm", "decoder", "text_decoder")
_MERGER_NAMES = (
    "merger",
    "deepstack_merger_list",
    "multi_modal_projector",
    "mm_projector",
    "connector",
    "projector",
    "visual_projection",
    "aligner",
    "mlp1",
    "resampler",
)


def module_groups(model) -> dict[str, list[str]]:
    """Module-name prefixes of each part: ``{"vision": [...], "merger": [...], "language": [...]}``.

    A parameter belongs to a part when its name equals a prefix or starts with ``prefix + "."``
    (see :func:`in_group`). "language" includes ``lm_head``, so freezing the language model
    freezes its output layer too. For Qwen2.5-VL: vision ``model.visual.patch_embed``,
    ``model.visual.rotary_pos_emb``, ``model.visual.blocks``; merger ``model.visual.merger``;
    language ``model.language_model``, ``lm_head``.
    """
    modules = dict(model.named_modules())
    prefix = _peft_prefix(modules)
    paths = get_family(family_name(model)).parts
    if paths is not None:
        vision_root, mergers, language = _named_parts(modules, paths, prefix)
        if not language:
            raise ModelLoadError("Cannot find the language model inside {model_type}.", model_type=type(model).__name__)
    else:
        vision_root, mergers, language = _found_parts(model, modules)
    vision: list[str] = []
    if vision_root is not None:
        inner = [m for m in mergers if in_group(m, [vision_root])]
        if inner:
            # The merger lives inside the vision tower (Qwen): the tower is its other children.
            root = modules[vision_root]
            vision = [
                f"{vision_root}.{child}"
                for child, _ in root.named_children()
                if not any(in_group(m, [f"{vision_root}.{child}"]) for m in inner)
            ]
            vision += [f"{vision_root}.{p}" for p, _ in root.named_parameters(recurse=False)]
        else:
            vision = [vision_root]
    return {"vision": vision, "merger": mergers, "language": language}


def _named_parts(modules: dict, paths: dict, prefix: str) -> tuple[str | None, list[str], list[str]]:
    """The parts a family entry names (paths of the bare model; under PEFT they gain its prefix)."""

    def present(part):
        return [prefix + p for p in paths[part] if prefix + p in modules]

    vision = present("vision")
    return (vision[0] if vision else None), present("merger"), present("language")


def _found_parts(model, modules: dict) -> tuple[str | None, list[str], list[str]]:
    """The parts of a model of no known family, by the names transformers gives them."""
    vision_root = _find_root(modules, _VISION_NAMES)
    language_root = _find_root(modules, _LANGUAGE_NAMES) or _name_of(modules, _call(model, "get_decoder"))
    if language_root is None:
        raise ModelLoadError("Cannot find the language model inside {model_type}.", model_type=type(model).__name__)
    mergers: list[str] = []
    for name in modules:
        if name.rsplit(".", 1)[-1] in _MERGER_NAMES and not any(in_group(name, [m]) for m in mergers):
            if not in_group(name, [language_root]):
                mergers.append(name)
    language = [language_root]
    lm_head = _name_of(modules, _call(model, "get_output_embeddings"))
    if lm_head and not in_group(lm_head, language):
        language.append(lm_head)
    return vision_root, mergers, language


def _peft_prefix(modules: dict) -> str:
    """``base_model.model.`` when the tree is a PEFT model's, else nothing."""
    return "base_model.model." if "base_model.model" in modules else ""


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
        raise ConfigError(
            "LoRA parts must be a non-empty subset of {parts} (got {got}).",
            parts=join(Msg(", "), PARTS),
            got=sorted(parts),
        )
    groups = module_groups(model)
    empty = sorted(p for p in parts if not groups[p])
    if empty:
        raise ConfigError("This model has no {empty} part to put LoRA adapters on.", empty=join(Msg(" or "), empty))
    prefixes = [prefix for part in parts for prefix in groups[part]]
    modules = dict(model.named_modules())
    lm_head = _name_of(modules, _call(model, "get_output_embeddings"))
    targets = sorted(
        name
        for name, module in modules.items()
        if isinstance(module, torch.nn.Linear) and name != lm_head and in_group(name, prefixes)
    )
    bare = sorted(p for p in parts if not any(in_group(t, groups[p]) for t in targets))
    if bare:  # Gemma 3's projector is a plain weight matrix, no linear layer
        raise ConfigError(
            "The {part} of this model has no linear layers to put LoRA adapters on; train it in full "
            "(train_{part}) or leave it frozen.",
            part=bare[0],
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
