"""The ``transformers.Trainer`` the lab trains with, and its arguments from a ``TrainConfig``.

These things differ from a stock ``Trainer``:

* The loss projects onto the vocabulary only where it is needed. Answers are a small
  share of a vision-language sample (a 448x448 image alone is 256 tokens), and the
  output layer of a Qwen model has 152k rows, so full logits (and their float32 copy in
  the loss) are the largest tensors of a step. The collator lists the positions whose
  next token is learned; the model computes logits for those (``logits_to_keep``) and
  the cross-entropy runs over the learned tokens alone (the collator's
  :class:`~lab.training.collator.LossCollator`). Same loss, far less memory.
* Batches are drawn from groups of similar length (when a batch has more than one
  sample), so little of a step is spent on padding; with ``packing`` a batch is one row
  without padding, and the language model attends within each of its samples
  (:mod:`lab.training.packing`).
* A stop request ends training after the current optimizer step, with a checkpoint.
* The GPU is not kept waiting on the host: the data loader's workers compute the Qwen-VL
  models' 3-D positions (:class:`~lab.training.collator.RopeIndex`) and their vision towers'
  index tensors (:mod:`lab.training.tower_index`), batches are copied to
  the GPU without blocking, and a frozen vision tower runs without autograd while training
  (:func:`~lab.training.speed.frozen_towers_without_grad`). Same numbers, fewer stalls.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import threading
from functools import partial
from typing import TYPE_CHECKING, Any

from lab.training.collator import LossCollator, RopeIndex
from lab.training.metrics import Throughput
from lab.training.packing import use_packed_attention
from lab.training.speed import (
    frozen_towers_without_grad,
    pad_for_compiled_blocks,
    ready_causal_mask,
    takes_ready_causal_mask,
)
from lab.training.tower_index import KEY as TOWER_INDEX
from lab.training.tower_index import TowerFeed, TowerIndex, host_checks, on_host

if TYPE_CHECKING:
    from lab.train_config import TrainConfig


def _learned_rows(module: Any, args: tuple, index: Any) -> tuple:
    """Output-layer pre-hook: of its ``(batch, positions, hidden)`` input, only the rows at ``index``."""
    hidden = args[0]
    return (hidden.reshape(-1, hidden.shape[-1]).index_select(0, index),) + args[1:]


def _accepts_logits_to_keep(model: Any) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # under PEFT's wrappers
    try:
        return "logits_to_keep" in inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return False


def make_trainer(
    model: Any,
    args: Any,
    train_dataset: Any,
    eval_dataset: Any,
    collator: Any,
    stop: threading.Event | None,
    throughput: Throughput,
    callbacks: list,
    optimizers=(None, None),
    scorer: Any = None,
):
    """A :class:`LabTrainer` (the class is built here so that importing this module stays light).

    ``scorer`` (a :class:`lab.training.scoring.AnswerScorer`) adds the scores of answers to every evaluation.
    """
    import torch
    import torch.nn.functional as F
    from transformers import PrinterCallback, Trainer, TrainerCallback
    from transformers.trainer_pt_utils import LengthGroupedSampler

    class StopCallback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            stopping = stop is not None and stop.is_set()
            if args.world_size > 1:
                stopping = _any_rank(stopping, args.device)
            if stopping:
                control.should_training_stop = True
                control.should_save = True
                control.should_log = True
            return control

    class LabTrainer(Trainer):
        # The loss below is already averaged over every learned token of the accumulated batch.
        loss_is_scaled_for_ga = True

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.model_accepts_loss_kwargs = True  # makes the Trainer count learned tokens across accumulation
            self._slice_logits = _accepts_logits_to_keep(self.model)
            self._tower_feed = None
            self._ready_mask = takes_ready_causal_mask(self.model)

        def train(self, *a, **kw):
            undo = [frozen_towers_without_grad(self.model), pad_for_compiled_blocks(self.model, self.data_collator)]
            if getattr(self.data_collator, "packing", False):
                undo.append(use_packed_attention(self.model))  # attention within each sample of a packed row
            tower = getattr(self.data_collator, "tower", None)
            if tower is not None:
                self._tower_feed = TowerFeed(self.model)  # each batch's tower index, computed by the workers
                undo += [self._tower_feed.remove, lambda: setattr(self, "_tower_feed", None), host_checks(tower)]
            try:
                return super().train(*a, **kw)
            finally:
                for restore in undo:
                    restore()

        def _get_num_items_in_batch(self, batch_samples, device):
            # The learned tokens are counted on the CPU, from the batch's labels. transformers then copies
            # the count to the GPU with a blocking copy, which waits for every kernel queued before it (the
            # whole previous step): on one device it goes through pinned memory without waiting instead.
            if self.args.world_size > 1 or self.args.n_gpu > 1 or torch.device(device).type != "cuda":
                return super()._get_num_items_in_batch(batch_samples, device)
            count = super()._get_num_items_in_batch(batch_samples, torch.device("cpu"))
            return count.pin_memory().to(device, non_blocking=True) if torch.is_tensor(count) else count

        def evaluation_loop(self, *a, **kw):
            output = super().evaluation_loop(*a, **kw)
            if scorer is not None:  # before the Trainer logs the metrics and compares checkpoints by them
                prefix = kw.get("metric_key_prefix", "eval")
                output.metrics.update({f"{prefix}_{name}": value for name, value in scorer.scores(self.model).items()})
            return output

        def _get_train_sampler(self, *a, **kw):
            group = self.args.per_device_train_batch_size * self.args.gradient_accumulation_steps
            if group <= 1 or not hasattr(self.train_dataset, "lengths"):
                return super()._get_train_sampler(*a, **kw)
            generator = torch.Generator().manual_seed(self.args.seed)
            return LengthGroupedSampler(group, lengths=self.train_dataset.lengths, generator=generator)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            positions = inputs.pop("loss_positions")
            index, targets = inputs.pop("loss_index"), inputs.pop("loss_targets")
            inputs.pop("labels", None)
            lengths = inputs.pop("sample_lengths", None)  # a packed row's samples
            tower_index = inputs.pop(TOWER_INDEX, None)
            on_host(inputs, keep=self._tower_feed is not None)  # grids the model then reads only on the host
            if model.training:
                throughput.add(inputs, lengths)
            mask = inputs.get("attention_mask")
            if self._ready_mask and lengths is None and mask is not None and mask.ndim == 2:
                inputs["attention_mask"] = ready_causal_mask(mask)  # what transformers builds, without a read back
            feed = self._tower_feed.batch(tower_index, inputs) if self._tower_feed else contextlib.nullcontext()
            with feed:
                return self._loss(model, inputs, positions, index, targets, return_outputs, num_items_in_batch)

        def _loss(self, model, inputs, positions, index, targets, return_outputs, num_items_in_batch):
            if self._slice_logits:
                # The output layer sees only the learned tokens: the rows of other samples at a
                # position one sample learns would each cost a vocabulary-wide row of logits.
                head = self.accelerator.unwrap_model(model).get_output_embeddings()
                hook = head.register_forward_pre_hook(partial(_learned_rows, index=index))
                try:
                    logits = model(**inputs, use_cache=False, logits_to_keep=positions).logits
                finally:
                    hook.remove()
                picked = logits.reshape(-1, logits.shape[-1]).float()
            else:
                logits = model(**inputs, use_cache=False).logits[:, positions]
                picked = logits.reshape(-1, logits.shape[-1]).index_select(0, index).float()
            loss = F.cross_entropy(picked, targets, reduction="sum")
            if num_items_in_batch is not None:
                loss = loss / num_items_in_batch
                if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                    loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
            else:
                loss = loss / max(targets.numel(), 1)
            return (loss, {"logits": None}) if return_outputs else loss

    if isinstance(collator, LossCollator) and collator.rope is None:
        collator.rope = RopeIndex.of(model)  # the collator runs in the loader's workers, which have no model
    if isinstance(collator, LossCollator):
        collator.unpadded_without_mask = takes_ready_causal_mask(model)
    if isinstance(collator, LossCollator) and collator.tower is None:
        collator.tower = TowerIndex.of(model)
    trainer = LabTrainer(
        model=model,
        args=args,
        data_collator=collator,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        callbacks=[StopCallback(), *callbacks],
        optimizers=optimizers,
    )
    trainer.remove_callback(PrinterCallback)  # metrics.jsonl (and its echo) is the log
    return trainer


def _any_rank(flag: bool, device) -> bool:
    """True on every rank when it is True on one: all ranks must stop after the same step, or one waits forever."""
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        return flag
    value = torch.tensor([1 if flag else 0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def _trains_vision_side(cfg: TrainConfig) -> bool:
    adapters = set(cfg.lora_targets) if cfg.method != "full" else set()
    return bool(adapters & {"vision", "merger"}) or cfg.train_vision or cfg.train_merger


def dataloader_workers(device: str) -> int:
    """Worker processes that decode and resize images while the GPU trains; none on the CPU."""
    if not device.startswith("cuda"):
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 2))


def training_arguments(
    cfg: TrainConfig, run_dir: str, device: str, dtype: Any, has_val: bool, deepspeed: dict | str | None = None
):
    """``TrainingArguments`` for ``cfg``; keys this transformers version lacks are left out."""
    import torch
    from transformers import TrainingArguments

    from lab.training.scoring import greater_is_better

    cuda = device.startswith("cuda")
    workers = dataloader_workers(device)
    wanted = dict(
        output_dir=str(run_dir),
        run_name=cfg.run_name,  # the run's name in W&B
        per_device_train_batch_size=cfg.per_device_batch_size,
        per_device_eval_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        learning_rate=cfg.learning_rate,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        lr_scheduler_type=cfg.lr_scheduler,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        seed=cfg.seed,
        data_seed=cfg.seed,
        eval_strategy="steps" if has_val else "no",
        eval_steps=cfg.eval_steps,
        save_strategy="steps",
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        logging_strategy="steps",
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        logging_nan_inf_filter=False,  # a NaN loss must show on the plot, not be hidden
        report_to=[] if cfg.report_to == "none" else [cfg.report_to],
        bf16=cuda and dtype == torch.bfloat16,
        fp16=cuda and dtype == torch.float16,
        gradient_checkpointing=cfg.gradient_checkpointing,
        # Non-reentrant checkpointing needs no input that requires grad, and works with frozen embeddings.
        gradient_checkpointing_kwargs={"use_reentrant": False},
        remove_unused_columns=False,
        label_names=["labels"],
        prediction_loss_only=True,
        dataloader_num_workers=workers,
        dataloader_pin_memory=cuda,
        dataloader_persistent_workers=workers > 0,
        dataloader_prefetch_factor=4 if workers else None,
        # Pinned batches copied without blocking: a blocking copy waits for the previous step's kernels.
        accelerator_config={"non_blocking": cuda},
        disable_tqdm=True,
        use_cpu=not cuda,
        optim="adamw_torch_fused",  # on the CPU too: one tensor at a time takes 40x longer over a large embedding
        # A batch without pictures (identity samples, text-only data) leaves the vision side's
        # trainable weights without gradients, which DDP must be told to expect.
        ddp_find_unused_parameters=_trains_vision_side(cfg),
        deepspeed=deepspeed,
        load_best_model_at_end=cfg.keep_best,
        metric_for_best_model=cfg.best_metric if cfg.keep_best else None,
        greater_is_better=greater_is_better(cfg.best_metric) if cfg.keep_best else None,
        save_safetensors=True,
        skip_memory_metrics=True,
    )
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "activation_checkpointing" in known:  # the newer name of the same switch
        wanted["activation_checkpointing"] = wanted.pop("gradient_checkpointing")
        wanted["activation_checkpointing_kwargs"] = wanted.pop("gradient_checkpointing_kwargs")
    if "warmup_ratio" in known:
        wanted["warmup_ratio"] = cfg.warmup_ratio
    else:
        wanted["warmup_steps"] = cfg.warmup_ratio  # below 1, read as a share of the steps
    args = TrainingArguments(**{k: v for k, v in wanted.items() if k in known})
    if args.n_gpu > 1:
        # One process on a machine with several GPUs trains on the model's own GPU. The Trainer
        # would wrap the model in nn.DataParallel, whose replicas hold no parameters (Qwen-VL reads
        # its vision tower's dtype from them and fails); several GPUs go through accelerate launch.
        args._n_gpu = 1
    return args
