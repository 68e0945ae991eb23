"""``metrics.jsonl``: the one record of a run's progress, written as it trains.

One JSON object per line. Log lines carry ``step, epoch, loss, eval_loss, lr,
grad_norm, samples_per_s, tokens_per_s, elapsed_s, eta_s, gpu_mem_gib`` (absent values
are null), and an evaluation's line the scores of the answers a run with ``eval_metrics``
gave (``eval_bleu``, ``eval_rouge_l``, ...); event lines carry ``event`` (``start``, ``end``, ``stop``, ``error``) and
what the event knows. The app plots from this file, so a reloaded page, the CLI and a
multi-GPU subprocess all show the same curve. Throughput counts text and image tokens
(padding excluded) and is measured over the steps since the previous line.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

METRICS_FILE = "metrics.jsonl"
LOG_FIELDS = (
    "step",
    "epoch",
    "loss",
    "eval_loss",
    "lr",
    "grad_norm",
    "samples_per_s",
    "tokens_per_s",
    "elapsed_s",
    "eta_s",
    "gpu_mem_gib",
)


def append_metrics(run_dir: str | Path, record: dict) -> None:
    """Append one line to the run's metrics file, flushed so a reader (or a crash) sees whole lines."""
    path = Path(run_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_metrics(run_dir: str | Path) -> list[dict]:
    """Every complete line of the run's metrics file (a line being written is skipped)."""
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def cut_metrics(run_dir: str | Path, step: int) -> None:
    """Keep the records up to ``step`` and drop every one after, in one atomic replace.

    A resumed run restarts from its last checkpoint, so the steps a crashed session logged
    after that checkpoint are trained and logged again; cut here first, each step appears
    once. A torn last line (the process killed mid-write) goes with them.
    """
    path = Path(run_dir) / METRICS_FILE
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("step"), (int, float)) and record["step"] > step:
            break  # the lines are in order: from here on everything came later
        kept.append(line + "\n")
    tmp = path.with_name(f".{METRICS_FILE}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def log_rows(records: list[dict]) -> list[dict]:
    """The log lines (no events), in order."""
    return [r for r in records if "event" not in r and r.get("step") is not None]


def last_event(records: list[dict]) -> dict | None:
    events = [r for r in records if "event" in r]
    return events[-1] if events else None


def _gpu_mem_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 2)


def _reset_gpu_peak() -> None:
    """Peak memory is reported per run, not since the app started."""
    import torch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()


def _round(value: Any, digits: int = 6) -> Any:
    if value is None:
        return None
    value = float(value)
    return round(value, digits) if value == value else None  # NaN -> null


class Throughput:
    """Samples and non-padding tokens counted by the training step, read at each log line."""

    def __init__(self) -> None:
        self.samples = 0
        self.tokens: Any = 0  # a device tensor while training: reading it every step would stall the GPU

    def add(self, inputs: dict, lengths: Any = None) -> None:
        """Count a batch; ``lengths`` are the samples' lengths in a packed row (one row of several samples)."""
        if lengths is not None:
            self.samples += lengths.shape[0]
            self.tokens = self.tokens + lengths.sum()
            return
        mask = inputs.get("attention_mask")
        ids = inputs["input_ids"]
        self.samples += ids.shape[0]
        self.tokens = self.tokens + (mask.sum() if mask is not None else ids.numel())

    def take(self) -> tuple[int, int]:
        samples, tokens = self.samples, int(self.tokens)
        self.samples, self.tokens = 0, 0
        return samples, tokens


def make_metrics_callback(run_dir: str | Path, throughput: Throughput, echo: Callable[[str], None] | None = None):
    """A ``TrainerCallback`` that appends a line to ``metrics.jsonl`` at each log (main process only)."""
    from transformers import TrainerCallback

    class MetricsCallback(TrainerCallback):
        def __init__(self) -> None:
            self.previous_elapsed = elapsed_so_far(read_metrics(run_dir))
            self.began = self.window = time.perf_counter()
            self.start_step = 0

        def on_train_begin(self, args, state, control, **kwargs):
            _reset_gpu_peak()
            self.began = self.window = time.perf_counter()
            self.start_step = state.global_step
            throughput.take()

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = logs or {}
            if not state.is_world_process_zero or not ({"loss", "eval_loss"} & logs.keys()):
                return
            record = self._record(args, state, logs)
            append_metrics(run_dir, record)
            if echo is not None:
                echo(format_line(record, state.max_steps))

        def _record(self, args, state, logs: dict) -> dict:
            now = time.perf_counter()
            samples, tokens = throughput.take() if "loss" in logs else (0, 0)
            window = max(now - self.window, 1e-9)
            if "loss" in logs:
                self.window = now
            world = max(int(getattr(args, "world_size", 1) or 1), 1)
            done = state.global_step - self.start_step
            session = now - self.began
            remaining = max(state.max_steps - state.global_step, 0)
            return {
                "step": state.global_step,
                "epoch": _round(state.epoch, 4),
                "loss": _round(logs.get("loss")),
                "eval_loss": _round(logs.get("eval_loss")),
                "lr": _round(logs.get("learning_rate"), 10),
                "grad_norm": _round(logs.get("grad_norm")),
                "samples_per_s": _round(samples * world / window, 3) if samples else None,
                "tokens_per_s": _round(tokens * world / window, 1) if samples else None,
                "elapsed_s": round(self.previous_elapsed + session, 2),
                "eta_s": round(session / done * remaining, 1) if done else None,
                "gpu_mem_gib": _gpu_mem_gib(),
                **answer_scores(logs),
            }

    return MetricsCallback()


def answer_scores(logs: dict) -> dict:
    """The scores of answers in a Trainer's log (``eval_bleu``, ...), rounded."""
    from lab.train_config import GENERATION_METRICS

    return {f"eval_{name}": _round(logs[f"eval_{name}"], 4) for name in GENERATION_METRICS if f"eval_{name}" in logs}


def elapsed_so_far(records: list[dict]) -> float:
    """Training time of earlier sessions of a resumed run, so the curve's clock keeps running."""
    rows = log_rows(records)
    return float(rows[-1].get("elapsed_s") or 0.0) if rows else 0.0


def format_line(record: dict, max_steps: int | None = None) -> str:
    """A log line for the terminal: ``step 10/50  loss 1.234  lr 2.0e-04  12.3 samples/s ...``."""
    parts = [f"step {record['step']}" + (f"/{max_steps}" if max_steps else "")]
    for key, label, fmt in (
        ("loss", "loss", "{:.4f}"),
        ("eval_loss", "eval_loss", "{:.4f}"),
        ("lr", "lr", "{:.2e}"),
        ("samples_per_s", "samples/s", "{:.2f}"),
        ("tokens_per_s", "tokens/s", "{:.0f}"),
        ("eta_s", "eta", "{:.0f}s"),
    ):
        if record.get(key) is not None:
            parts.append(f"{label} {fmt.format(record[key])}")
    parts += [f"{key} {value:.2f}" for key, value in answer_scores(record).items() if value is not None]
    return "  ".join(parts)


class GRPOMeter:
    """A GRPO run's numbers since its last ``metrics.jsonl`` line, and that line (:mod:`lab.training.grpo`)."""

    def __init__(self) -> None:
        self.began = self.window = time.perf_counter()
        self.last_loss: float | None = None
        self.sample: dict = {}
        self._reset()

    def _reset(self) -> None:
        self.losses, self.kls, self.norms = [], [], []
        self.prompts = self.tokens = 0

    def sampled(self, rollouts: list, group: int) -> None:
        """The answers just sampled: their rewards (total and per function), spread in a group, lengths."""
        import torch

        totals = [r for ro in rollouts for r in ro.rewards]
        spread = torch.tensor(totals).view(-1, group).std(dim=1).mean().item()
        names = rollouts[0].per_reward
        self.sample = {
            "reward": sum(totals) / len(totals),
            "reward_std": spread,
            "rewards": {name: _mean([v for ro in rollouts for v in ro.per_reward[name]]) for name in names},
            "completion_length": _mean([n for ro in rollouts for n in ro.lengths]),
        }
        self.prompts += len(totals) // group
        self.tokens += sum(ro.tokens for ro in rollouts)

    def stepped(self, loss: float, kl: float, grad_norm: float) -> None:
        self.losses.append(loss)
        self.kls.append(kl)
        self.norms.append(grad_norm)
        self.last_loss = loss

    def record(self, step: int, total: int, epoch: float, lr: float) -> dict:
        now = time.perf_counter()
        window, elapsed = max(now - self.window, 1e-9), now - self.began
        sample = self.sample
        record = {
            "step": step,
            "epoch": _round(epoch, 4),
            "loss": _round(_mean(self.losses)),
            "kl": _round(_mean(self.kls)),
            "reward": _round(sample["reward"]),
            "reward_std": _round(sample["reward_std"]),
            "rewards": {name: _round(value) for name, value in sample["rewards"].items()},
            "completion_length": _round(sample["completion_length"], 2),
            "lr": _round(lr, 10),
            "grad_norm": _round(_mean(self.norms)),
            "samples_per_s": _round(self.prompts / window, 3) if self.prompts else None,
            "tokens_per_s": _round(self.tokens / window, 1) if self.prompts else None,
            "elapsed_s": round(elapsed, 2),
            "eta_s": round(elapsed / step * (total - step), 1),
            "gpu_mem_gib": _gpu_mem_gib(),
        }
        self.window = now
        self._reset()
        return record


def _mean(values: list) -> float | None:
    return sum(values) / len(values) if values else None
