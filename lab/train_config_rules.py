"""The rules between a training configuration's fields, checked when a :class:`~lab.train_config.TrainConfig`
is made: each broken one is a :class:`~lab.errors.ConfigError` with one sentence that says what to change.

Each field's own type, bounds and choices come from its declaration (:func:`lab.settings.check`);
what is here involves several fields, or a field and what it names (datasets, rewards).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lab.errors import ConfigError
from lab.text import Msg
from lab.training.mix import dataset_entries
from lab.training.rewards import check_pattern, parse_rewards

if TYPE_CHECKING:
    from lab.train_config import TrainConfig


def check_rules(cfg: TrainConfig) -> None:
    """Raise :class:`ConfigError` for the first rule ``cfg`` breaks."""
    _require(cfg.model.strip() != "", Msg("model is empty; give a Hub id, a model folder or 'demo'."))
    _require(
        cfg.dataset != [] and cfg.dataset != "" and not str(cfg.dataset).isspace(),
        Msg("dataset is empty; give a dataset folder or a .jsonl file."),
    )
    dataset_entries(cfg.dataset)  # each entry readable, none twice
    _numbers(cfg)
    _method(cfg)
    _evaluation(cfg)
    _hardware(cfg)
    _grpo(cfg)
    _packing(cfg)


def _numbers(cfg: TrainConfig) -> None:
    _require(
        cfg.max_steps > 0 or cfg.num_epochs > 0,
        Msg("max_steps and num_epochs are both <= 0, so there is nothing to train; set one of them."),
    )
    _require(
        cfg.max_steps > 0 or cfg.max_steps == -1,
        Msg(
            "max_steps must be a positive number of steps or -1 (use num_epochs), not {max_steps}.",
            max_steps=cfg.max_steps,
        ),
    )
    if cfg.min_pixels and cfg.max_pixels and cfg.min_pixels > cfg.max_pixels:
        raise ConfigError(
            "min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels}).",
            min_pixels=cfg.min_pixels,
            max_pixels=cfg.max_pixels,
        )
    for name in ("model_name", "model_author"):
        value = getattr(cfg, name)
        _require(
            len(value) == 2 and all(v.strip() for v in value),
            Msg("{name} must be two names, [Chinese, English], not {value}.", name=name, value=value),
        )


def _method(cfg: TrainConfig) -> None:
    from lab.train_config import PARTS

    trained = [part for part in PARTS if getattr(cfg, f"train_{part}")]
    if cfg.method == "full":
        for name in ("use_rslora", "use_dora", "loraplus_lr_ratio"):
            _require(
                getattr(cfg, name) in (False, None),
                Msg(
                    "{name} applies to LoRA adapters, but method is 'full'; use method 'lora' or turn it off.",
                    name=name,
                ),
            )
        _require(
            bool(trained),
            Msg(
                "method 'full' with train_vision, train_merger and train_language all false "
                "trains nothing; set at least one to true."
            ),
        )
        return
    _require(
        bool(cfg.lora_targets),
        Msg(
            "method '{method}' needs at least one part in lora_targets; "
            "to train parts without adapters use method 'full'.",
            method=cfg.method,
        ),
    )
    if cfg.method == "qlora":
        if trained:
            raise ConfigError(
                "qlora keeps the base weights quantized, which cannot train, so train_{trained} "
                "must be false; use method 'lora' to train full weights next to adapters.",
                trained=trained[0],
            )
        _require(
            not str(cfg.deepspeed).startswith("zero3"),
            Msg(
                "qlora cannot be combined with DeepSpeed zero3, which shards the "
                "quantized weights; use zero2 or method 'lora'."
            ),
        )
    for part in trained:
        _require(
            part not in cfg.lora_targets,
            Msg(
                "'{part}' is in lora_targets and train_{part} is true; "
                "a part gets either adapters or full training, not both.",
                part=part,
            ),
        )


def _evaluation(cfg: TrainConfig) -> None:
    validates = cfg.val_ratio > 0 or bool(cfg.val_dataset)
    if cfg.eval_metrics or cfg.keep_best:
        what = "keep_best" if cfg.keep_best else "eval_metrics"
        _require(
            validates,
            Msg("{what} needs validation samples; set val_ratio above 0 or give a val_dataset.", what=what),
        )
    if cfg.keep_best and cfg.save_steps % cfg.eval_steps:
        raise ConfigError(
            "keep_best picks among the checkpoints of evaluated steps, so save_steps ({save_steps}) "
            "must be a multiple of eval_steps ({eval_steps}).",
            save_steps=cfg.save_steps,
            eval_steps=cfg.eval_steps,
        )
    if cfg.best_metric != "eval_loss" and cfg.best_metric not in cfg.eval_metrics:
        raise ConfigError(
            "best_metric {metric} is a score of the answers, so eval_metrics must include it.",
            metric=cfg.best_metric,
        )


def _hardware(cfg: TrainConfig) -> None:
    if cfg.deepspeed and cfg.num_gpus < 2:
        raise ConfigError(
            "deepspeed {stage} shards training over several GPUs, but num_gpus is {num_gpus}; "
            "set num_gpus to 2 or more, or deepspeed to null.",
            stage=cfg.deepspeed,
            num_gpus=cfg.num_gpus,
        )
    if cfg.deepspeed == "zero3_offload" and cfg.loraplus_lr_ratio:
        raise ConfigError(
            "zero3_offload trains with DeepSpeed's own CPU optimizer, which has no LoRA+ rates; "
            "set loraplus_lr_ratio to null or use zero3."
        )


def _grpo(cfg: TrainConfig) -> None:
    specs = parse_rewards(cfg.rewards)  # a typo in a reward's name is refused for any trainer
    if cfg.trainer != "grpo":
        return
    _require(bool(specs), Msg("trainer 'grpo' needs at least one reward in rewards, such as json_valid."))
    _require(cfg.num_gpus == 1, Msg("trainer 'grpo' trains on one GPU (or the CPU); set num_gpus to 1."))
    _require(
        not cfg.keep_best,
        Msg("trainer 'grpo' does not evaluate during the run, so it keeps no best checkpoint; set keep_best to false."),
    )
    _require(
        cfg.max_new_tokens < cfg.max_length,
        Msg(
            "max_new_tokens ({max_new_tokens}) leaves no room for the prompt within max_length "
            "({max_length}); raise max_length or lower max_new_tokens.",
            max_new_tokens=cfg.max_new_tokens,
            max_length=cfg.max_length,
        ),
    )
    if any(spec.name == "format" for spec in specs):
        check_pattern(cfg.reward_pattern)


def _packing(cfg: TrainConfig) -> None:
    from lab.training.packing import config_refusal

    reason = config_refusal(cfg.trainer, cfg.per_device_batch_size) if cfg.packing is True else None
    if reason is not None:
        raise ConfigError(reason)  # dynamic template: the reason packing cannot apply


def _require(ok: bool, sentence: Msg) -> None:
    if not ok:
        raise ConfigError(sentence)  # dynamic template: the Msg a check failed with
