"""One training run, start to finish: the function the CLI, the app's background job and the benchmark call.

:func:`run_training` claims the run folder (:mod:`lab.training.run_folder`: refusing one
another run holds, locking it against other processes) and writes the resolved config into it, encodes the data,
prepares the model, trains with :mod:`lab.training.trainer`, and saves the adapter (or
the model) with the processor at the top of the run folder. A stop request ends the run
after the current step with a checkpoint; running out of memory ends it with advice and
the memory freed. Every outcome is an event line in ``metrics.jsonl``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.errors import ConfigError, LabError
from lab.handle import free_accelerator_memory, resolve_model_name
from lab.jobs import unexpected_failure
from lab.text import Msg, join, msg_of, saved_fields
from lab.training.fit import resolve_auto
from lab.training.launch import is_main_process, training_device
from lab.training.metrics import Throughput, append_metrics, make_metrics_callback
from lab.training.run_folder import claim_run_dir
from lab.training.runs import latest_checkpoint

if TYPE_CHECKING:
    from lab.train_config import TrainConfig

TRAINING = Msg("Training")  # what failed, when a run fails


@dataclass
class TrainResult:
    """How a run ended: ``finished`` or ``stopped``, and the trained model still in memory."""

    run_dir: Path
    status: str
    step: int
    loss: float | None
    model: Any
    is_peft: bool


def load_options(cfg: TrainConfig, device: str) -> dict:
    """``load_model`` options for a run: quantization for QLoRA, float32 master weights for full fp16 training."""
    from lab.models import resolve_dtype

    dtype = resolve_dtype(cfg.dtype, device)
    if cfg.method == "full" and str(dtype) == "torch.float16":
        dtype = "float32"  # fp16 weights cannot take optimizer updates; autocast still computes in fp16
    options = dict(
        dtype=dtype,
        device=device,
        min_pixels=cfg.min_pixels,
        max_pixels=cfg.max_pixels,
        trust_remote_code=cfg.trust_remote_code,
        hub=cfg.hub,
    )
    if cfg.method == "qlora":
        options.update(
            quantization=f"{cfg.quant_bits}bit",
            double_quant=cfg.double_quant,
            quant_compute_dtype=cfg.quant_compute_dtype,
        )
    return options


def model_source(cfg: TrainConfig) -> str:
    """The folder or Hub id to load: ``demo`` is the tiny offline demo model."""
    return resolve_model_name(cfg.model)


def check_quantization(cfg: TrainConfig, loaded: Any) -> None:
    """QLoRA needs the model loaded quantized; the other methods need it unquantized."""
    want = f"{cfg.quant_bits}bit" if cfg.method == "qlora" else None
    if (loaded.quantization or None) != want:
        have = loaded.quantization or "unquantized"
        raise ConfigError(
            "Method {method} needs the model loaded {want}, but it is loaded {have}; "
            "load it again with the right quantization.",
            method=cfg.method,
            want=want or "unquantized",
            have=have,
        )


def oom_advice(cfg: TrainConfig, device: str) -> Msg:
    """One sentence on what to change after running out of memory."""
    tips = []
    if cfg.per_device_batch_size > 1:
        tips.append(
            Msg("a smaller per_device_batch_size (raise gradient_accumulation_steps to keep the effective batch)")
        )
    tips.append(Msg("fewer pixels per image (max_pixels)"))
    if not cfg.gradient_checkpointing:
        tips.append(Msg("gradient_checkpointing: true"))
    if cfg.method != "qlora" and device.startswith("cuda"):
        tips.append(Msg("method qlora"))
    memory = Msg("GPU memory") if device.startswith("cuda") else Msg("computer memory")
    return Msg(
        "Training ran out of {memory}; the memory is freed again, try {tips}.", memory=memory, tips=_either(tips)
    )


def _either(options: list[Msg]) -> Msg:
    """``"a, b or c"``; a single option alone."""
    if len(options) == 1:
        return options[0]
    return Msg("{some} or {last}", some=join(Msg(", "), options[:-1]), last=options[-1])


def run_training(
    cfg: TrainConfig,
    *,
    loaded: Any = None,
    stop: threading.Event | None = None,
    resume: bool = False,
    log: Callable[[str], None] = print,
    echo_metrics: bool = False,
    callbacks: tuple = (),
) -> TrainResult:
    """Train ``cfg`` to the end (or to ``stop``); raises :class:`LabError` with one sentence on failure.

    ``loaded`` is a :class:`lab.models.LoadedModel` to train in place (the app's model);
    without it the model is loaded here. To resume, ``cfg`` is the run's saved config and
    training continues from its last checkpoint: same step count, same curve. ``callbacks``
    are extra ``TrainerCallback`` objects (custom logging, tests).
    """
    import torch

    from lab.training.preflight import check_run_environment

    check_run_environment(cfg)  # before the folder is claimed or anything loads
    device = loaded.device if loaded is not None else training_device()
    if not resume:  # "auto" batch and checkpointing become values before config.yaml is written
        resolve_auto(cfg, str(device), log)
    run_dir, lock = claim_run_dir(cfg, resume)
    failure: Msg | None = None
    try:
        if cfg.trainer == "grpo":  # learning from rewards: lab/training/grpo.py
            from lab.training.grpo import train_grpo

            return train_grpo(cfg, run_dir, loaded, device, stop, log, echo_metrics, resume)
        return _train(cfg, run_dir, loaded, device, stop, resume, log, echo_metrics, list(callbacks))
    except torch.OutOfMemoryError:
        failure = oom_advice(cfg, device)
    except MemoryError:
        failure = oom_advice(cfg, "cpu")
    except LabError as err:
        failure = msg_of(err)
        raise
    except Exception as err:
        failure = unexpected_failure(TRAINING, err)
        raise
    finally:
        if failure is not None:
            free_accelerator_memory()
            if is_main_process():  # the Msg too, so a reloaded page shows the reason in its own language
                append_metrics(run_dir, {"event": "error", "time": time.time(), **saved_fields("message", failure)})
            log(str(failure))
        if lock is not None:
            lock.release()
    raise LabError(failure)  # dynamic template: the failure above


def _prepare(cfg, loaded, device: str, log, build=None):
    """Load (if needed) and prepare the model, and encode the data: ``(loaded, data, prepared)``.

    ``build(cfg, processor, log)`` makes the data (default: the SFT samples of :func:`build_data`).
    """
    from transformers import set_seed

    from lab.models import load_model
    from lab.pixel_limits import set_image_pixels
    from lab.training.data import build_data
    from lab.training.setup import prepare_model, unwrap_adapters

    if loaded is None:
        log(f"Loading {cfg.model} on {device} ...")
        loaded = load_model(model_source(cfg), **load_options(cfg, device))
    check_quantization(cfg, loaded)
    # The processor keeps the run's pixel bounds afterwards: the trained model expects them.
    set_image_pixels(loaded.processor, min_pixels=cfg.min_pixels, max_pixels=cfg.max_pixels, family=loaded.family)
    if build is None:
        data = build_data(cfg, loaded.processor, log, family=loaded.family)
    else:
        data = build(cfg, loaded.processor, log)
    loaded.model = unwrap_adapters(loaded.model)
    # The adapters' random starting weights come from the run's seed, as everything else of the
    # run does: the Trainer seeds only once the model is prepared, and before this a run of a
    # LoRA config trained differently every time.
    set_seed(cfg.seed)
    prepared = prepare_model(loaded.model, cfg)
    loaded.model = prepared.model  # so that whoever holds ``loaded`` can undo the adapters if training fails
    log(prepared.summary())
    return loaded, data, prepared


def _train(
    cfg, run_dir: Path, loaded, device: str, stop, resume: bool, log, echo_metrics: bool, extra_callbacks: list
) -> TrainResult:
    from lab.families import get_family
    from lab.training.collator import LossCollator, TrainDataset
    from lab.training.launch import run_deepspeed_config
    from lab.training.mix import write_data_mix
    from lab.training.scoring import AnswerScorer, best_checkpoint, check_validation
    from lab.training.trainer import make_trainer, training_arguments

    loaded, data, prepared = _prepare(cfg, loaded, device, log)
    processor = loaded.processor
    check_validation(cfg, data)
    if is_main_process():
        write_data_mix(run_dir, data.mix)
    deepspeed = run_deepspeed_config(cfg, run_dir)
    args = training_arguments(cfg, str(run_dir), device, loaded.dtype, bool(data.val), deepspeed)
    throughput = Throughput()
    callbacks = [
        make_metrics_callback(run_dir, throughput, log if echo_metrics else None),
        _start_event(run_dir, data, prepared, resume),
        *extra_callbacks,
    ]
    collator = LossCollator(
        processor.tokenizer.pad_token_id,
        8 if device.startswith("cuda") else 1,
        packed=get_family(loaded.family).packed,
        packing=cfg.packing,
    )
    pixels = loaded.dtype if (args.bf16 or args.fp16) else None
    trainer = make_trainer(
        prepared.model,
        args,
        TrainDataset(data.train, processor, pixels),
        TrainDataset(data.val, processor, pixels) if data.val else None,
        collator,
        stop,
        throughput,
        callbacks,
        _optimizers(prepared.model, cfg),
        AnswerScorer.for_run(cfg, data.val_records, processor),
    )
    checkpoint = latest_checkpoint(run_dir) if resume else None
    undo = speedups(prepared.model, cfg, args, loaded) + [_wandb_in(run_dir, cfg)]
    try:
        output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        stopped = stop is not None and stop.is_set()
        trainer.save_model(str(run_dir))
        if trainer.is_world_process_zero():
            processor.save_pretrained(str(run_dir))
        step = trainer.state.global_step
        best = best_checkpoint(trainer, cfg)
    finally:
        for restore in reversed(undo):
            restore()
        prepared.model.zero_grad(set_to_none=True)
        trainer.accelerator.free_memory()
        trainer.optimizer = trainer.lr_scheduler = None
        del trainer
        free_accelerator_memory()
    loss = _last_loss(run_dir)
    if is_main_process():
        append_metrics(
            run_dir,
            {
                "event": "stop" if stopped else "end",
                "time": time.time(),
                "step": step,
                "loss": loss,
                "train_loss": output.training_loss,
                **best,
            },
        )
    log(f"{'Stopped' if stopped else 'Finished'} at step {step}; saved to {run_dir}")
    return TrainResult(run_dir, "stopped" if stopped else "finished", step, loss, prepared.model, prepared.is_peft)


def speedups(model: Any, cfg: TrainConfig, args: Any, loaded: Any) -> list[Callable[[], None]]:
    """Switch on the fast paths of :mod:`lab.training.speed` that apply; returns their undo functions."""
    from lab.training.speed import (
        compile_blocks,
        skip_adapter_input_cast,
        use_grouped_vision_attention,
    )

    undo = [use_grouped_vision_attention(model)]
    if (args.bf16 or args.fp16) and cfg.method != "full" and not cfg.use_dora:
        undo.append(skip_adapter_input_cast(model))
    if cfg.torch_compile and str(loaded.device).startswith("cuda") and not loaded.quantization:
        undo.append(compile_blocks(model))
    return undo


def _wandb_in(run_dir: Path, cfg: TrainConfig) -> Callable[[], None]:
    """W&B keeps its files (offline runs too) in the run folder unless ``WANDB_DIR`` says otherwise; returns undo."""
    if cfg.report_to != "wandb" or "WANDB_DIR" in os.environ:
        return lambda: None
    os.environ["WANDB_DIR"] = str(run_dir)
    return lambda: os.environ.pop("WANDB_DIR", None)


def _last_loss(run_dir: Path) -> float | None:
    from lab.training.metrics import log_rows, read_metrics

    losses = [r["loss"] for r in log_rows(read_metrics(run_dir)) if r.get("loss") is not None]
    return losses[-1] if losses else None


def _start_event(run_dir: Path, data, prepared, resume: bool):
    from transformers import TrainerCallback

    class StartEvent(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                append_metrics(
                    run_dir,
                    {
                        "event": "start",
                        "time": time.time(),
                        "step": state.global_step,
                        "total_steps": state.max_steps,
                        "resumed": resume,
                        "train_samples": len(data.train),
                        "val_samples": len(data.val),
                        "dropped": len(data.dropped),
                        "data_mix": data.mix,
                        "trainable_params": prepared.trainable,
                        "total_params": prepared.total,
                    },
                )

    return StartEvent()


def _optimizers(model: Any, cfg: TrainConfig):
    """LoRA+ needs its own optimizer (B matrices at a higher rate); otherwise the Trainer makes one."""
    if cfg.method == "full" or not cfg.loraplus_lr_ratio:
        return (None, None)
    import torch
    from peft.optimizers import create_loraplus_optimizer

    optimizer = create_loraplus_optimizer(
        model,
        torch.optim.AdamW,
        lr=cfg.learning_rate,
        loraplus_lr_ratio=cfg.loraplus_lr_ratio,
        weight_decay=cfg.weight_decay,
    )
    return (optimizer, None)
