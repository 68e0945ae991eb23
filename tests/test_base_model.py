"""The base model stays the base: runs trained one after another in the app's process (the Train tab's job
API, on the one shared model) leave the loaded base weights bit for bit as a fresh load gives them, and
Evaluate's "base" column answers as a fresh process does."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.evaluation.runner import EvalSettings, run_evaluation, samples_from_run
from lab.handle import ModelHandle
from lab.models import load_model
from lab.train_config import TrainConfig
from lab.training import job as jobs
from lab.training.setup import unwrap_adapters


def tiny_config(tiny_models, **overrides) -> TrainConfig:
    settings = dict(
        model=str(tiny_models("qwen2_5_vl")),
        dataset="data/sample",
        max_steps=2,
        per_device_batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=5e-2,
        logging_steps=1,
        eval_steps=50,
        save_steps=100,
        val_ratio=0.1,
        warmup_ratio=0.0,
        lora_dropout=0.0,
        gradient_checkpointing=False,
        dtype="float32",
    )
    return TrainConfig(**{**settings, **overrides})


def base_weights(model) -> dict:
    """The base tensors under PEFT's wrappers, read without unloading anything: a LoRA layer's ``base_layer``,
    a fully trained part's ``original_module``; adapter weights and trained copies left out."""
    model = model.get_base_model() if hasattr(model, "get_base_model") else model
    weights = {}
    for name, tensor in model.state_dict().items():
        if "lora_" in name or ".modules_to_save." in name:
            continue
        weights[name.replace(".base_layer.", ".").replace(".original_module.", ".")] = tensor
    return weights


def assert_same_weights(weights: dict, expected: dict) -> None:
    assert weights.keys() == expected.keys()
    changed = [name for name, tensor in expected.items() if not weights[name].equal(tensor)]
    assert not changed, changed[:5]


def _train(handle, cfg) -> jobs.TrainingJob:
    job = jobs.start_training(cfg, handle)
    assert job.wait(300) and job.status == "finished", job.message
    return job


def test_unwrapping_puts_back_the_parts_trained_in_full(tiny_models):
    from peft import LoraConfig, get_peft_model

    from lab.model_parts import lora_target_modules
    from lab.training.setup import _modules_to_save

    path = tiny_models("qwen2_5_vl")
    fresh = load_model(path, device="cpu").model.state_dict()
    model = load_model(path, device="cpu").model
    cfg = tiny_config(tiny_models, lora_targets=["language"], train_vision=True)
    wrapped = get_peft_model(
        model,
        LoraConfig(
            r=4, target_modules=lora_target_modules(model, {"language"}), modules_to_save=_modules_to_save(model, cfg)
        ),
    )
    trained = [p for n, p in wrapped.named_parameters() if ".modules_to_save." in n]
    assert trained and all(p.requires_grad for p in trained)
    for param in trained:  # as a run that trained the vision tower leaves it
        param.data.add_(1.0)
    assert_same_weights(base_weights(wrapped), fresh)  # the wrappers keep the base beside the trained copies
    assert_same_weights(unwrap_adapters(wrapped).state_dict(), fresh)  # and unwrapping keeps the base, not the copies


@pytest.mark.slow
def test_runs_one_after_another_in_the_app_leave_the_base_as_loaded(tiny_models, lab_home):
    path = tiny_models("qwen2_5_vl")
    fresh = load_model(path, device="cpu").model.state_dict()
    handle = ModelHandle()
    handle.load(str(path))

    # LoRA on the language model with the vision tower trained in full, then LoRA on the merger alone.
    vision = _train(handle, tiny_config(tiny_models, run_name="vision", lora_targets=["language"], train_vision=True))
    assert handle.loaded.adapter == "vision"
    copies = {
        n.replace(".modules_to_save.vision.", "."): t
        for n, t in handle.loaded.model.get_base_model().state_dict().items()
        if ".modules_to_save." in n
    }
    assert copies and any(not t.equal(fresh[n]) for n, t in copies.items())  # its vision tower did train
    assert_same_weights(base_weights(handle.loaded.model), fresh)
    merger = _train(handle, tiny_config(tiny_models, run_name="merger", lora_targets=["merger"]))
    assert handle.loaded.adapter == "merger" and handle.describe()["name"] == str(path)  # the header: base + adapter
    assert_same_weights(base_weights(handle.loaded.model), fresh)
    assert merger.run_dir != vision.run_dir

    # A full run trains on the base, then its weights are what is loaded, and the header says so.
    full = _train(handle, tiny_config(tiny_models, run_name="full", method="full", lora_targets=[], train_merger=True))
    info = handle.describe()
    assert info["adapter"] is None and info["tuned_from"] == str(path) and info["name"] == str(full.run_dir)
    tuned = handle.loaded.model.state_dict()
    assert_same_weights(tuned, load_model(full.run_dir, device="cpu").model.state_dict())
    merger_keys = {n for n in fresh if ".merger." in n}
    assert all(not tuned[n].equal(fresh[n]) for n in merger_keys)  # what it trained moved
    assert_same_weights(
        {n: t for n, t in tuned.items() if n not in merger_keys},  # and it started from the base:
        {n: t for n, t in fresh.items() if n not in merger_keys},
    )  # not run 1's vision tower

    # A run on the base model after it loads the base again.
    _train(handle, tiny_config(tiny_models, run_name="after", lora_targets=["language"], train_vision=True))
    assert handle.describe()["tuned_from"] is None
    assert_same_weights(base_weights(handle.loaded.model), fresh)


@pytest.mark.slow
def test_evaluates_base_column_answers_as_a_fresh_process_does(tiny_models, lab_home):
    path = tiny_models("qwen2_5_vl")
    handle = ModelHandle()
    handle.load(str(path))
    _train(handle, tiny_config(tiny_models, run_name="first", lora_targets=["language"], train_vision=True))
    second = _train(handle, tiny_config(tiny_models, run_name="second", lora_targets=["merger"]))
    samples, _ = samples_from_run(second.run_dir)
    settings = EvalSettings(compare_base=True, limit=3, max_new_tokens=12, name="in-app")
    in_app = run_evaluation(handle, samples, settings)

    command = [
        sys.executable,
        "-m",
        "lab",
        "eval",
        "--model",
        str(path),
        "--adapter",
        str(second.run_dir),
        "--compare-base",
        "--limit",
        "3",
        "--max-new-tokens",
        "12",
        "--name",
        "fresh",
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    fresh = [json.loads(line) for line in (second.run_dir / "eval" / "fresh.jsonl").read_text().splitlines()]
    assert [s["id"] for s in fresh] == [s["id"] for s in in_app.samples]
    assert [s["answers"]["base"] for s in fresh] == [s["answers"]["base"] for s in in_app.samples]
    assert [s["answers"]["tuned"] for s in fresh] == [s["answers"]["tuned"] for s in in_app.samples]
