"""What must hold on this machine before a run loads anything: one check for the CLI, the Train tab and
:func:`lab.training.runner.run_training` alike.

:class:`~lab.train_config.TrainConfig` refuses settings that contradict each other; this
refuses settings this machine cannot honour (a dataset that is not there, a reward file
that cannot run, a logging package or DeepSpeed that is not installed, GPUs it does not
have, packing asked of a model that cannot be packed), each with one sentence, before minutes go into loading a
model. Nothing asked for is dropped silently.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

from lab.errors import ConfigError

if TYPE_CHECKING:
    from lab.train_config import TrainConfig

LOGGING_PACKAGES = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",)}


def check_run_environment(cfg: TrainConfig) -> None:
    """Refuse ``cfg`` with one sentence if this machine cannot train it as asked."""
    from lab.training.data import check_datasets

    check_datasets(cfg)
    check_logging(cfg)
    check_gpus(cfg)
    check_packing(cfg)
    if cfg.trainer == "grpo":
        from lab.training.rewards import load_rewards

        load_rewards(cfg)  # a reward file that cannot run, or any reward file on a shared deployment


def _installed(*modules: str) -> bool:
    return any(importlib.util.find_spec(module) is not None for module in modules)


def check_logging(cfg: TrainConfig) -> None:
    """``report_to`` needs its package."""
    modules = LOGGING_PACKAGES.get(cfg.report_to)
    if modules and not _installed(*modules):
        raise ConfigError(
            "report_to {target} needs the {package} package (pip install 'vlm-lab[logging]'); "
            "install it or set report_to to none.",
            target=cfg.report_to,
            package=modules[0],
        )


def check_gpus(cfg: TrainConfig) -> None:
    """Several GPUs and DeepSpeed need CUDA GPUs, enough of them, and DeepSpeed its package."""
    from lab.training.launch import check_deepspeed_package

    if cfg.deepspeed:
        check_deepspeed_package(cfg.deepspeed)
    if cfg.num_gpus <= 1 and not cfg.deepspeed:
        return
    import torch

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < cfg.num_gpus:
        raise ConfigError(
            "num_gpus is {num_gpus} but this machine has {have} GPU(s); lower num_gpus.",
            num_gpus=cfg.num_gpus,
            have=have,
        )


def check_packing(cfg: TrainConfig) -> None:
    """``packing: true`` needs a model whose samples can be packed exactly (read from its config.json)."""
    if cfg.packing is not True:
        return
    from lab.training.packing import model_refusal

    reason = model_refusal(cfg.model)
    if reason is not None:
        raise ConfigError(reason)  # dynamic template: why this model cannot be packed
