"""The numbers of GRPO's objective: group-relative advantages, the clipped loss with its KL penalty, and
the answer tokens' log-probabilities under a model (the formulas are in :mod:`lab.training.grpo`)."""

from __future__ import annotations

from typing import Any

LOSS_KEYS = ("labels", "loss_positions", "loss_index", "loss_targets")


def group_advantages(rewards: Any, group_size: int, eps: float = 1e-4) -> Any:
    """``(r - mean) / (std + eps)`` within each consecutive group of ``group_size`` rewards.

    The standard deviation is the sample one (n - 1), as in TRL; a group whose answers all
    scored the same gets advantages of 0 and teaches nothing.
    """
    grouped = rewards.view(-1, group_size)
    mean, std = grouped.mean(dim=1, keepdim=True), grouped.std(dim=1, keepdim=True)
    return ((grouped - mean) / (std + eps)).reshape(-1)


def per_answer_mean(values: Any, rows: Any, n: int) -> Any:
    """The mean of per-token ``values`` over each answer's tokens (``rows``: the answer of each token)."""
    import torch

    sums = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    counts = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, torch.ones_like(values))
    return sums / counts.clamp(min=1)


def grpo_loss(logps: Any, old: Any, ref: Any, advantages: Any, rows: Any, beta: float, epsilon: float):
    """``(loss, kl)``: the clipped policy-gradient loss with its KL penalty, and the mean KL (see the module doc)."""
    import torch

    old = logps.detach() if old is None else old
    ratio = torch.exp(logps - old)
    adv = advantages[rows]
    per_token = -torch.min(ratio * adv, ratio.clamp(1 - epsilon, 1 + epsilon) * adv)
    kl = torch.zeros_like(logps)
    if ref is not None:
        kl = torch.exp(ref - logps) - (ref - logps) - 1
        per_token = per_token + beta * kl
    n = advantages.shape[0]
    return per_answer_mean(per_token, rows, n).mean(), per_answer_mean(kl.detach(), rows, n).mean()


def token_logps(model: Any, batch: dict, temperature: float, suppressed: list[int] = ()) -> Any:
    """Log-probabilities of the answer tokens of ``batch`` under ``model``, flat in the collator's token order.

    ``suppressed`` are token ids the answers were sampled without (image placeholders).
    """
    import torch

    from lab.training.trainer import _accepts_logits_to_keep

    inputs = {k: v for k, v in batch.items() if k not in LOSS_KEYS}
    positions, index, targets = batch["loss_positions"], batch["loss_index"], batch["loss_targets"]
    if _accepts_logits_to_keep(model):
        logits = model(**inputs, use_cache=False, logits_to_keep=positions).logits
    else:
        logits = model(**inputs, use_cache=False).logits[:, positions]
    # At the temperature and without the tokens the answers were sampled with: the probabilities they were drawn with.
    picked = logits.reshape(-1, logits.shape[-1]).index_select(0, index).float() / temperature
    if suppressed:
        picked = picked.index_fill(1, torch.tensor(list(suppressed), device=picked.device), float("-inf"))
    return picked.log_softmax(-1).gather(1, targets[:, None]).squeeze(1)
