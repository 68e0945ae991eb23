"""GRPO: learning from reward functions instead of reference answers, in one loop read top to bottom.

Group Relative Policy Optimization (DeepSeekMath, https://arxiv.org/abs/2402.03300). For each
prompt the model samples a group of ``num_generations`` answers; the reward functions
(:mod:`lab.training.rewards`) score each one, and an answer's advantage is its score against
its own group::

    A_i = (r_i - mean(r_group)) / (std(r_group) + eps)

so an answer better than its siblings is made more likely and a worse one less, with no value
model to train. Each answer token ``t`` then has the loss of PPO's clipped objective plus a
penalty for drifting from the reference model (the model the run started from)::

    ratio_t = exp(logp_t - logp_old_t)
    loss_t  = -min(ratio_t * A, clip(ratio_t, 1 - epsilon, 1 + epsilon) * A) + beta * KL_t
    KL_t    = exp(ref_t - logp_t) - (ref_t - logp_t) - 1      (an estimator that is never negative)

averaged over each answer's tokens, then over the answers, as in the paper
(:mod:`lab.training.grpo_objective`). With
``num_iterations`` 1 the answers are used for one step only, ``logp_old`` equals ``logp``
and the clip never bites; it does with more updates per batch of answers.

``trainer: grpo`` sets the objective; ``method`` still says which weights learn, so it
composes with LoRA, QLoRA and full fine-tuning alike. The reference costs no second model
with adapters: it is the same model with the adapter switched off. A full fine-tune has no
such switch, so it keeps a frozen copy (the weights' memory twice); ``beta: 0`` drops it.

What is reused: sampling is :func:`lab.generate.generate_batch` (left-padded batches, the
model's own distribution); the answers are scored with the prompt by the SFT collator
(:class:`~lab.training.collator.LossCollator`: right padding, the answer's tokens as the
learned positions, M-RoPE positions on the CPU, logits computed only there); the run folder,
its lock, failure sentences and ``metrics.jsonl`` are the SFT run's (:mod:`lab.training.runner`).
A GRPO run saves its result at the end or at a stop, and ``checkpoint-N`` folders to resume
from (:mod:`lab.training.grpo_checkpoint`): every ``save_steps`` steps, at a stop and at the end.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.training.grpo_data import (
    Prompt,
    answer_ids,
    build_batch,
    load_prompts,
    to_device,
)
from lab.training.grpo_objective import group_advantages, grpo_loss, token_logps
from lab.training.metrics import GRPOMeter, append_metrics, format_line

if TYPE_CHECKING:
    from lab.train_config import TrainConfig

# ---------------------------------------------------------------- one batch of answers


@dataclass
class Rollout:
    """Sampled answers with what the update needs: the batch (on the CPU), advantages, old and reference log-probs."""

    batch: dict
    advantages: Any
    rows: Any  # the answer each learned token belongs to
    old: Any  # log-probs when sampled (None: the update's own, detached)
    ref: Any  # log-probs under the reference model (None: beta is 0)
    rewards: list[float]
    per_reward: dict[str, list[float]]
    lengths: list[int]
    tokens: int


def rollout(run: Any, prompts: list[Prompt]) -> Rollout:
    """Sample ``num_generations`` answers per prompt, score them, and compute what the update needs."""
    import torch

    from lab.generate import generate_batch
    from lab.images import open_image
    from lab.training.rewards import score

    cfg, group = run.cfg, run.cfg.num_generations
    images = [[open_image(path) for path in prompt.images] for prompt in prompts]
    answers = generate_batch(
        run.loaded,
        [p.messages for p in prompts for _ in range(group)],
        [im for im in images for _ in range(group)],
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        plain=True,
    )
    rewards, per_reward = score(
        run.rewards,
        [a.text for a in answers],
        _each([p.reference for p in prompts], group),
        prompts=_each([p.question for p in prompts], group),
        images=_each([p.images for p in prompts], group),
    )
    advantages = group_advantages(torch.tensor(rewards, dtype=torch.float32), group).to(run.device)
    batch = build_batch(run.loaded.processor, prompts, images, answers, run.collator)
    rows = (batch["loss_index"] // max(len(batch["loss_positions"]), 1)).to(run.device)
    run.model.train()  # generation left it in eval mode
    old = ref = None
    with torch.no_grad(), run.autocast():
        on_device = to_device(batch, run.device)
        if cfg.num_iterations > 1:  # later updates on these answers compare against the policy that sampled them
            old = token_logps(run.model, on_device, cfg.temperature, run.suppressed)
        if cfg.beta > 0:
            if run.reference is not None:
                ref = token_logps(run.reference, on_device, cfg.temperature, run.suppressed)
            else:
                with run.model.disable_adapter():  # the base model: the adapter switched off, no second copy
                    ref = token_logps(run.model, on_device, cfg.temperature, run.suppressed)
    return Rollout(
        batch,
        advantages,
        rows,
        old,
        ref,
        rewards,
        per_reward,
        [len(answer_ids(a)) for a in answers],
        int(batch["attention_mask"].sum()),
    )


def _each(values: list, group: int) -> list:
    """One value per answer: each prompt's value repeated for the answers of its group."""
    return [value for value in values for _ in range(group)]


# ---------------------------------------------------------------- the loop


@dataclass
class GRPORun:
    """What every step uses: the settings, the model and its reference, the rewards, the collator, the optimizer."""

    cfg: TrainConfig
    loaded: Any
    model: Any
    reference: Any  # a frozen copy for full fine-tuning with beta > 0; None: the adapter is switched off instead
    rewards: list
    collator: Any
    device: Any
    amp_dtype: Any  # autocast's dtype on a GPU in half precision, else None
    suppressed: list[int]  # token ids never sampled (image placeholders)
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None

    def autocast(self):
        import torch

        return torch.autocast("cuda", dtype=self.amp_dtype) if self.amp_dtype is not None else nullcontext()


def total_steps(cfg: TrainConfig, n_prompts: int) -> int:
    """Optimizer steps of the run: ``max_steps``, else enough batches of prompts for ``num_epochs``."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    per_batch = cfg.per_device_batch_size * cfg.gradient_accumulation_steps
    return max(1, math.ceil(cfg.num_epochs * n_prompts / per_batch)) * cfg.num_iterations


class PromptOrder:
    """Batches of prompts in a new shuffled order each epoch (from ``seed``); counts what was drawn."""

    def __init__(self, prompts: list[Prompt], size: int, seed: int):
        self.prompts, self.size, self.rng = prompts, size, random.Random(seed)
        self.queue: list[int] = []
        self.drawn = 0

    def next(self) -> list[Prompt]:
        while len(self.queue) < self.size:
            order = list(range(len(self.prompts)))
            self.rng.shuffle(order)
            self.queue += order
        picked, self.queue = self.queue[: self.size], self.queue[self.size :]
        self.drawn += self.size
        return [self.prompts[i] for i in picked]

    @property
    def epoch(self) -> float:
        return self.drawn / len(self.prompts)


def update(run: GRPORun, rollouts: list[Rollout]) -> tuple[float, float, float]:
    """One optimizer step on the answers of ``rollouts`` (their gradients accumulated): ``(loss, kl, grad_norm)``."""
    import torch

    cfg, losses, kls = run.cfg, [], []
    for r in rollouts:
        with run.autocast():
            logps = token_logps(run.model, to_device(r.batch, run.device), cfg.temperature, run.suppressed)
        loss, kl = grpo_loss(logps, r.old, r.ref, r.advantages, r.rows, cfg.beta, cfg.clip_epsilon)
        run.scaler.scale(loss / len(rollouts)).backward()
        losses.append(loss.item())
        kls.append(kl.item())
    run.scaler.unscale_(run.optimizer)
    trainable = [p for p in run.model.parameters() if p.requires_grad]
    grad_norm = torch.nn.utils.clip_grad_norm_(trainable, cfg.max_grad_norm if cfg.max_grad_norm > 0 else math.inf)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()
    return sum(losses) / len(losses), sum(kls) / len(kls), float(grad_norm)


def train_steps(
    run: GRPORun,
    order: PromptOrder,
    total: int,
    run_dir: Path,
    stop: Any,
    echo: Callable[[str], None] | None,
    step: int = 0,
    meter: GRPOMeter | None = None,
) -> tuple[int, bool, GRPOMeter]:
    """The loop: sample and score answers, then learn from them, until ``total`` steps or a stop request.

    Starts after ``step`` (a resumed run's checkpoint). Returns ``(last step, stopped, meter)``; a line goes
    to ``metrics.jsonl`` every ``logging_steps``, and a checkpoint is saved between batches of answers every
    ``save_steps`` steps, at a stop and at the end.
    """
    from lab.training.grpo_checkpoint import save_checkpoint

    cfg, meter, stopped, saved = run.cfg, meter or GRPOMeter(), False, step
    while step < total and not stopped:
        # 1. Answers: a group per prompt, sampled by the policy as it is now, and scored.
        rollouts = [rollout(run, order.next()) for _ in range(cfg.gradient_accumulation_steps)]
        meter.sampled(rollouts, cfg.num_generations)
        # 2. Updates: num_iterations optimizer steps on those answers.
        for _ in range(cfg.num_iterations):
            meter.stepped(*update(run, rollouts))
            step += 1
            stopped = stop is not None and stop.is_set()
            if step == 1 or step % cfg.logging_steps == 0 or step == total or stopped:
                record = meter.record(step, total, order.epoch, run.scheduler.get_last_lr()[0])
                append_metrics(run_dir, record)
                if echo is not None:
                    echo(f"{format_line(record, total)}  reward {record['reward']:.4f}  kl {record['kl']:.4f}")
            if stopped or step >= total:
                break
        if stopped or step >= total or step - saved >= cfg.save_steps:
            save_checkpoint(run_dir, step, run, order, cfg.save_total_limit)
            saved = step
    return step, stopped, meter


def train_grpo(
    cfg: TrainConfig,
    run_dir: Path,
    loaded: Any,
    device: str,
    stop: Any,
    log: Callable[[str], None],
    echo_metrics: bool = False,
    resume: bool = False,
):
    """Train ``cfg`` with GRPO in the claimed ``run_dir`` (from its last checkpoint with ``resume``):
    a :class:`~lab.training.runner.TrainResult`."""
    import torch

    from lab.handle import free_accelerator_memory
    from lab.training.rewards import load_rewards
    from lab.training.runner import TrainResult, _prepare
    from lab.training.speed import (
        frozen_towers_without_grad,
        use_grouped_vision_attention,
    )

    rewards = load_rewards(cfg)  # a reward file that cannot run fails here, before minutes of model loading
    loaded, prompts, prepared = _prepare(cfg, loaded, device, log, build=load_prompts)
    torch.manual_seed(cfg.seed)
    total = total_steps(cfg, len(prompts.train))
    run = _setup(cfg, loaded, prepared, rewards, total)
    order = PromptOrder(prompts.train, cfg.per_device_batch_size, cfg.seed)
    step, meter = 0, GRPOMeter()
    if resume:
        from lab.training.grpo_checkpoint import load_checkpoint
        from lab.training.metrics import elapsed_so_far, read_metrics
        from lab.training.runs import latest_checkpoint

        step = load_checkpoint(latest_checkpoint(run_dir), run, order)
        meter.began -= elapsed_so_far(read_metrics(run_dir))  # the curve's clock carries on
        log(f"Resuming from step {step}")
    append_metrics(
        run_dir,
        {
            "event": "start",
            "time": time.time(),
            "step": step,
            "total_steps": total,
            "resumed": resume,
            "trainer": "grpo",
            "train_samples": len(prompts.train),
            "val_samples": prompts.val_count,
            "dropped": len(prompts.dropped),
            "trainable_params": prepared.trainable,
            "total_params": prepared.total,
        },
    )
    if cfg.gradient_checkpointing:
        run.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # A group repeats its prompt's images: batched vision attention and no autograd in a frozen tower pay off here.
    undo = [use_grouped_vision_attention(run.model), frozen_towers_without_grad(run.model)]
    try:
        step, stopped, meter = train_steps(
            run, order, total, run_dir, stop, log if echo_metrics else None, step=step, meter=meter
        )
    finally:
        for restore in reversed(undo):
            restore()
        run.model.zero_grad(set_to_none=True)
        run.optimizer = run.scheduler = run.reference = None
        free_accelerator_memory()
    prepared.model.save_pretrained(str(run_dir))  # with LoRA the adapter, at the top of the run folder
    loaded.processor.save_pretrained(str(run_dir))
    append_metrics(
        run_dir, {"event": "stop" if stopped else "end", "time": time.time(), "step": step, "loss": meter.last_loss}
    )
    log(f"{'Stopped' if stopped else 'Finished'} at step {step}; saved to {run_dir}")
    return TrainResult(
        run_dir, "stopped" if stopped else "finished", step, meter.last_loss, prepared.model, prepared.is_peft
    )


def _setup(cfg: TrainConfig, loaded: Any, prepared: Any, rewards: list, total: int) -> GRPORun:
    """The run's parts: the reference model if one is needed, the collator, the optimizer, mixed precision."""
    import copy

    import torch
    from transformers import get_scheduler

    from lab.generate import feature_placeholders
    from lab.training.collator import LossCollator, RopeIndex
    from lab.training.runner import _optimizers

    model = prepared.model
    reference = None
    if cfg.beta > 0 and not prepared.is_peft:
        reference = copy.deepcopy(model).eval().requires_grad_(False)  # full fine-tuning: a frozen copy
    cuda = str(loaded.device).startswith("cuda")
    amp = loaded.dtype if cuda and loaded.dtype in (torch.bfloat16, torch.float16) else None
    collator = LossCollator(loaded.processor.tokenizer.pad_token_id, 8 if cuda else 1, RopeIndex.of(model))
    run = GRPORun(
        cfg, loaded, model, reference, rewards, collator, model.device, amp, feature_placeholders(loaded.processor)
    )
    run.optimizer = _optimizers(model, cfg)[0] or torch.optim.AdamW(
        [p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    run.scheduler = get_scheduler(cfg.lr_scheduler, run.optimizer, math.ceil(cfg.warmup_ratio * total), total)
    run.scaler = torch.amp.GradScaler(enabled=amp == torch.float16)  # fp16 gradients underflow unscaled
    return run
