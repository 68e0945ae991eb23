"""GRPO's checkpoints: what a stopped or crashed GRPO run resumes from, to the same curve.

A ``checkpoint-N`` folder, like an SFT run's, holds everything the next step depends on:

* ``trainable.safetensors``: every weight that learns (adapters, or the parts trained in full);
* ``optimizer.pt``, ``scheduler.pt``, ``scaler.pt``: their state dicts;
* ``grpo_state.pt``: the prompt order (its random state, the prompts queued, how many were
  drawn) and PyTorch's random states, which the sampling of answers draws from;
* ``trainer_state.json`` (``global_step``), written last: a folder without it is incomplete
  (:func:`lab.training.runs.latest_checkpoint` skips it).

A checkpoint is taken between batches of answers (after their ``num_iterations`` updates),
every ``save_steps`` steps, at a stop and at the end; ``save_total_limit`` keeps the newest.
A run stopped before its last update of a batch of answers resumes with a new batch.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

WEIGHTS = "trainable.safetensors"
STATE = "grpo_state.pt"
MARK = "trainer_state.json"


def save_checkpoint(run_dir: Path, step: int, run: Any, order: Any, limit: int | None = None) -> Path:
    """Write ``checkpoint-<step>`` for ``run`` (a :class:`~lab.training.grpo.GRPORun`) and its prompt ``order``."""
    import torch
    from safetensors.torch import save_file

    folder = Path(run_dir) / f"checkpoint-{step}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    trainable = {n: p.detach().contiguous().cpu() for n, p in run.model.named_parameters() if p.requires_grad}
    save_file(trainable, str(folder / WEIGHTS), metadata={"format": "pt"})
    torch.save(run.optimizer.state_dict(), folder / "optimizer.pt")
    torch.save(run.scheduler.state_dict(), folder / "scheduler.pt")
    torch.save(run.scaler.state_dict(), folder / "scaler.pt")
    torch.save(
        {
            "step": step,
            "order": {"random": order.rng.getstate(), "queue": list(order.queue), "drawn": order.drawn},
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        },
        folder / STATE,
    )
    (folder / MARK).write_text(json.dumps({"global_step": step, "trainer": "grpo"}), encoding="utf-8")
    _keep_newest(Path(run_dir), limit)
    return folder


def load_checkpoint(folder: Path, run: Any, order: Any) -> int:
    """Put ``run`` and ``order`` back as ``folder`` has them; returns the step it was taken at."""
    import torch
    from safetensors.torch import load_file

    from lab.errors import ConfigError

    folder = Path(folder)
    if not (folder / STATE).is_file():
        raise ConfigError(
            "{folder} is not a checkpoint of a GRPO run (an SFT run's?); resume it with trainer sft.", folder=folder
        )
    saved = load_file(str(folder / WEIGHTS))
    params = {n: p for n, p in run.model.named_parameters() if p.requires_grad}
    if saved.keys() != params.keys():
        raise ConfigError(
            "The checkpoint {folder} holds other trainable weights than this run's settings make; "
            "resume it with the settings it was saved with.",
            folder=folder,
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(saved[name])
    device = next(iter(params.values())).device if params else "cpu"
    run.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", map_location=device, weights_only=True))
    run.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    run.scaler.load_state_dict(torch.load(folder / "scaler.pt", weights_only=True))
    state = torch.load(folder / STATE, weights_only=True)
    order.rng.setstate(state["order"]["random"])
    order.queue, order.drawn = list(state["order"]["queue"]), state["order"]["drawn"]
    torch.set_rng_state(state["torch"])
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    return int(state["step"])


def _keep_newest(run_dir: Path, limit: int | None) -> None:
    from lab.training.runs import checkpoints

    if not limit or limit <= 0:
        return
    for old in checkpoints(run_dir)[:-limit]:
        shutil.rmtree(old, ignore_errors=True)
