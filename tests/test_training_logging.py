"""report_to: TensorBoard and W&B (offline) get the run's metrics when their packages are installed
(pyproject's [logging] extra, which the test extra pulls in); requirements.txt names the same packages."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from lab.train_config import TrainConfig
from lab.training.runner import run_training

ROOT = Path(__file__).resolve().parent.parent


def tiny_config(tiny_models, **overrides) -> TrainConfig:
    settings = dict(
        model=str(tiny_models("qwen2_5_vl")),
        dataset="data/sample",
        max_steps=2,
        per_device_batch_size=2,
        gradient_accumulation_steps=1,
        logging_steps=1,
        eval_steps=1,
        val_ratio=0.05,
        warmup_ratio=0.0,
        gradient_checkpointing=False,
        dtype="float32",
        run_name="logged",
    )
    return TrainConfig(**{**settings, **overrides})


def test_requirements_txt_names_the_logging_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    commented = re.findall(r"^# ([A-Za-z0-9_.-]+>=[0-9.]+)$", (ROOT / "requirements.txt").read_text(), re.M)
    assert commented == extras["logging"] == ["tensorboard>=2.20", "wandb>=0.30"]
    assert "vlm-lab[logging]" in extras["test"]  # so that the tests below run wherever the tests do


def test_tensorboard_gets_the_losses(tiny_models, lab_home):
    pytest.importorskip("tensorboard", reason="pip install 'vlm-lab[logging]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_training(tiny_config(tiny_models, report_to="tensorboard"), log=lambda _: None)
    events = list((result.run_dir / "runs").rglob("events.out.tfevents.*"))
    assert len(events) == 1
    scalars = EventAccumulator(str(events[0].parent)).Reload()
    assert [e.step for e in scalars.Scalars("train/loss")] == [1, 2]
    assert [e.step for e in scalars.Scalars("eval/loss")] == [1, 2]


def test_wandb_logs_offline_into_the_run_folder(tiny_models, lab_home, monkeypatch):
    pytest.importorskip("wandb", reason="pip install 'vlm-lab[logging]'")
    monkeypatch.setenv("WANDB_MODE", "offline")  # never the network
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_DIR", raising=False)
    result = run_training(tiny_config(tiny_models, report_to="wandb"), log=lambda _: None)
    runs = list((result.run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    import os

    assert "WANDB_DIR" not in os.environ  # set for the run only
