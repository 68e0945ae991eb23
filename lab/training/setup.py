"""Getting a loaded model ready to train: which weights learn, adapters, memory savers.

The model has three parts (:func:`lab.model_parts.module_groups`): the vision tower, the
merger and the language model. ``method: full`` trains the full weights of the parts
with ``train_<part>: true`` and freezes the rest. ``lora``/``qlora`` freeze everything,
put adapters on the linear layers of the ``lora_targets`` parts, and train the full
weights of any ``train_<part>`` part next to them (saved with the adapter through
PEFT's ``modules_to_save``, so the adapter folder is complete on its own).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lab.errors import ConfigError
from lab.model_parts import in_group, lora_target_modules, module_groups

if TYPE_CHECKING:
    from lab.train_config import TrainConfig

ADAPTER = "default"  # PEFT's name while training, so files land at the top of the run folder
PARTS = ("vision", "merger", "language")


@dataclass
class Prepared:
    """The model to hand to the trainer, and a count of what trains."""

    model: Any
    trainable: int
    total: int
    is_peft: bool

    def summary(self) -> str:
        share = 100.0 * self.trainable / max(self.total, 1)
        return f"{self.trainable:,} of {self.total:,} parameters train ({share:.2f}%)"


def trained_parts(cfg: TrainConfig) -> list[str]:
    """Parts whose full weights train."""
    return [part for part in PARTS if getattr(cfg, f"train_{part}")]


def prepare_model(model: Any, cfg: TrainConfig) -> Prepared:
    """Freeze, wrap with LoRA if asked, and return the model ready for ``Trainer``."""
    model.requires_grad_(False)
    if getattr(model, "config", None) is not None:
        model.config.use_cache = False  # a KV cache is useless in training and costs memory
    if cfg.method == "full":
        groups = module_groups(model)
        prefixes = [p for part in trained_parts(cfg) for p in groups[part]]
        for name, param in model.named_parameters():
            if in_group(name, prefixes):
                param.requires_grad_(True)
        return _prepared(model, is_peft=False)
    return _prepared(_with_lora(model, cfg), is_peft=True)


def _with_lora(model: Any, cfg: TrainConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    target = lora_target_modules(model, set(cfg.lora_targets))
    config = LoraConfig(
        r=cfg.lora_rank,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=target,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        modules_to_save=_modules_to_save(model, cfg) or None,
        bias="none",
    )
    return get_peft_model(model, config, adapter_name=ADAPTER)


def _modules_to_save(model: Any, cfg: TrainConfig) -> list[str]:
    """Full names of the modules whose full weights train next to the adapters.

    PEFT replaces each with a trainable copy; a ModuleList cannot be wrapped (the model
    iterates over it), so lists are split into their items.
    """
    import torch

    parts = trained_parts(cfg)
    if not parts:
        return []
    groups = module_groups(model)
    modules = dict(model.named_modules())
    names: list[str] = []
    for part in parts:
        for prefix in groups[part]:
            module = modules.get(prefix)
            if module is None:
                raise ConfigError(
                    "train_{part} needs weights at {prefix}, which this model lacks.", part=part, prefix=prefix
                )
            if isinstance(module, (torch.nn.ModuleList, torch.nn.ModuleDict)):
                names += [f"{prefix}.{child}" for child, _ in module.named_children()]
            elif any(True for _ in module.parameters()):
                names.append(prefix)
    lora_parts = {p: groups[p] for p in cfg.lora_targets}
    for name in names:
        for part, prefixes in lora_parts.items():
            if any(in_group(p, [name]) for p in prefixes):
                raise ConfigError(
                    "{name} would get both LoRA adapters ({part}) and full training; "
                    "drop {part} from lora_targets or the full training of the part around it.",
                    name=name,
                    part=part,
                )
    return names


def _prepared(model: Any, is_peft: bool) -> Prepared:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    if trainable == 0:
        raise ConfigError("Nothing would train with these settings; pick LoRA targets or parts to train.")
    return Prepared(model, trainable, total, is_peft)


def unwrap_adapters(model: Any) -> Any:
    """The base model under any PEFT adapters, as it was loaded, or ``model`` itself.

    Adapters come off without merging. A part trained in full next to them (``modules_to_save``)
    gets its original module back: PEFT's ``unload()`` alone would put the active adapter's trained
    copy in its place, so the next run, and Evaluate's "base", would start from another run's weights.
    """
    from peft import PeftModel

    if not isinstance(model, PeftModel):
        return model
    restore_original_modules(model)
    return model.unload()


def restore_original_modules(model: Any) -> None:
    """Put back, in place of each ``modules_to_save`` wrapper of ``model``, the module it wraps (untrained)."""
    from peft.utils.other import AuxiliaryTrainingWrapper

    wrappers = [
        (name, module) for name, module in model.named_modules() if isinstance(module, AuxiliaryTrainingWrapper)
    ]
    outer = [
        (name, module) for name, module in wrappers if not any(name.startswith(other + ".") for other, _ in wrappers)
    ]
    for name, wrapper in outer:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child, wrapper.original_module)


def finish_model(model: Any) -> None:
    """Back to inference: eval mode, no gradients, no checkpointing, KV cache on."""
    model.eval()
    model.requires_grad_(False)
    checkpointing = getattr(model, "is_activation_checkpointing", None)  # transformers 5's name
    if checkpointing is None:
        checkpointing = getattr(model, "is_gradient_checkpointing", False)
    if checkpointing:
        model.gradient_checkpointing_disable()
    config = getattr(model, "config", None)
    if config is not None:
        config.use_cache = True
