"""Answers scored while training: the generation metrics of ``eval_metrics`` at every evaluation.

At each evaluation the model in training answers the first ``eval_samples`` validation
samples (greedy, left-padded batches of :func:`lab.generate.generate_batch`, the same
samples every time) and :mod:`lab.evaluation.metrics` scores the answers against the
references. The Trainer adds the scores to its evaluation metrics as ``eval_<metric>``,
so they land in ``metrics.jsonl`` next to ``eval_loss`` and ``keep_best`` can pick a
checkpoint by them. Every process of a multi-GPU run answers the same samples (under
ZeRO-3 each forward pass needs all of them); only the main process writes the line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from lab.errors import ConfigError

if TYPE_CHECKING:
    from lab.train_config import TrainConfig


def greater_is_better(metric: str) -> bool:
    """The direction of a ``best_metric``: the loss falls as the model improves, every score rises."""
    return metric != "eval_loss"


def generation_scores(predictions: list[str], references: list[str], names: list[str]) -> dict[str, float]:
    """The scores ``names`` (0-100) of ``predictions``; JSON validity counts even where the references are text."""
    from lab.evaluation.metrics import json_key_f1, parse_json, score_answers

    summary, _ = score_answers(predictions, references)
    scores = {}
    for name in names:
        if name in summary:
            scores[name] = summary[name]
        elif name == "json_valid":
            scores[name] = round(100.0 * sum(parse_json(p) is not None for p in predictions) / len(predictions), 4)
        elif name == "json_key_f1":
            scores[name] = round(sum(json_key_f1(p, r) for p, r in zip(predictions, references)) / len(predictions), 4)
    return scores


def check_validation(cfg: TrainConfig, data) -> None:
    """Evaluating answers or keeping the best checkpoint needs validation samples that survived encoding."""
    if (cfg.eval_metrics or cfg.keep_best) and not data.val:
        raise ConfigError(
            "keep_best and eval_metrics need validation samples, but none is left after encoding; "
            "raise val_ratio or max_length, or give a val_dataset."
        )


def best_checkpoint(trainer: Any, cfg: TrainConfig) -> dict:
    """What ``keep_best`` ended with, for the run's last event (empty without it)."""
    state = trainer.state
    if not cfg.keep_best or state.best_model_checkpoint is None:
        return {}
    return {
        "best_metric": cfg.best_metric,
        "best_value": state.best_metric,
        "best_step": int(Path(state.best_model_checkpoint).name.rsplit("-", 1)[1]),
    }


@dataclass
class AnswerScorer:
    """The fixed validation samples answered at each evaluation, with their images loaded once."""

    prompts: list[list[dict]]
    images: list[list[Any]]
    references: list[str]
    metrics: list[str]
    processor: Any
    max_new_tokens: int
    batch_size: int

    @classmethod
    def for_run(cls, cfg: TrainConfig, val_records: list[dict], processor: Any) -> AnswerScorer | None:
        """The scorer of ``cfg.eval_metrics`` on the first ``cfg.eval_samples`` answered records (None: no metrics)."""
        from lab.evaluation.runner import samples_from_records
        from lab.images import open_image
        from lab.training.data import with_system

        if not cfg.eval_metrics:
            return None
        samples = samples_from_records(val_records)[: cfg.eval_samples]
        if not samples:
            return None
        return cls(
            prompts=[with_system(s.messages, cfg.system) for s in samples],
            images=[[open_image(p) for p in s.images] for s in samples],
            references=[s.reference for s in samples],
            metrics=list(cfg.eval_metrics),
            processor=processor,
            max_new_tokens=cfg.eval_max_new_tokens,
            batch_size=max(cfg.per_device_batch_size, 1),
        )

    def answers(self, model: Any) -> list[str]:
        """The model's greedy answers to the samples (the model is left in eval mode)."""
        from lab.generate import generate_batch

        loaded = SimpleNamespace(model=model, processor=self.processor)
        texts: list[str] = []
        for first in range(0, len(self.prompts), self.batch_size):
            batch = slice(first, first + self.batch_size)
            texts += [
                g.text
                for g in generate_batch(
                    loaded, self.prompts[batch], self.images[batch], max_new_tokens=self.max_new_tokens
                )
            ]
        return texts

    def scores(self, model: Any) -> dict[str, float]:
        """``{metric: score}`` of the model's answers now."""
        return generation_scores(self.answers(model), self.references, self.metrics)
