"""Evaluation during training: answers scored at every evaluation (metrics.jsonl, the live plot), keep_best
ending the run with the best checkpoint's weights, and QLoRA on the CPU evaluating mid-run and training on."""

from __future__ import annotations

import pytest

from lab.train_config import TrainConfig
from lab.training.metrics import last_event, log_rows, read_metrics
from lab.training.runner import run_training
from lab.training.runs import score_curves


def tiny_config(tiny_models, **overrides) -> TrainConfig:
    settings = dict(
        model=str(tiny_models("qwen2_5_vl")),
        dataset="data/sample",
        max_steps=4,
        per_device_batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=1e-2,
        logging_steps=1,
        eval_steps=2,
        save_steps=2,
        val_ratio=0.1,
        warmup_ratio=0.0,
        lora_dropout=0.0,
        gradient_checkpointing=False,
        dtype="float32",
        run_name="run",
        eval_samples=3,
        eval_max_new_tokens=8,
    )
    return TrainConfig(**{**settings, **overrides})


def _adapter(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_the_best_metric_has_its_direction_and_reaches_the_trainer(tmp_path):
    from lab.training.trainer import training_arguments

    for metric, greater in (("eval_loss", False), ("rouge_l", True), ("json_valid", True)):
        cfg = TrainConfig(
            keep_best=True, best_metric=metric, eval_metrics=["rouge_l", "json_valid"], eval_steps=10, save_steps=20
        )
        args = training_arguments(cfg, str(tmp_path), "cpu", None, True)
        assert args.load_best_model_at_end and args.metric_for_best_model == metric
        assert args.greater_is_better is greater
    plain = training_arguments(TrainConfig(), str(tmp_path), "cpu", None, True)
    assert not plain.load_best_model_at_end and plain.metric_for_best_model is None


@pytest.mark.slow
def test_answers_are_scored_at_every_evaluation_and_keep_best_ends_with_the_best_checkpoint(tiny_models, lab_home):
    cfg = tiny_config(
        tiny_models, eval_metrics=["exact_match", "json_valid", "rouge_l"], keep_best=True, best_metric="exact_match"
    )
    result = run_training(cfg, log=lambda _: None)
    records = read_metrics(result.run_dir)
    evaluations = [r for r in log_rows(records) if r.get("eval_loss") is not None]
    assert [r["step"] for r in evaluations] == [2, 4]
    for row in evaluations:
        assert {row["eval_exact_match"], row["eval_json_valid"]} == {0.0} and 0 <= row["eval_rouge_l"] <= 100
    curves = score_curves(result.run_dir)
    assert sorted({p["series"] for p in curves}) == ["exact_match", "json_valid", "rouge_l"]
    assert sorted({p["step"] for p in curves}) == [2, 4]

    # A tiny random model never answers exactly, so step 2 stays the best: the run ends with its weights,
    # not with step 4's, in memory and in the run folder (as load_best_model_at_end does).
    end = last_event(records)
    assert (end["event"], end["best_metric"], end["best_step"], end["best_value"]) == ("end", "exact_match", 2, 0.0)
    best, last, saved = (
        _adapter(result.run_dir / "checkpoint-2"),
        _adapter(result.run_dir / "checkpoint-4"),
        _adapter(result.run_dir),
    )
    assert saved.keys() == best.keys() and all(saved[k].equal(best[k]) for k in best)
    assert any(not last[k].equal(best[k]) for k in best)  # step 4's weights differ: the choice mattered
    in_memory = {n: p for n, p in result.model.named_parameters() if "lora_" in n}
    assert in_memory and all(in_memory[n].detach().equal(best[n.replace(".default", "")]) for n in in_memory)


@pytest.mark.slow
def test_qlora_on_the_cpu_evaluates_mid_run_and_trains_on(tiny_models, lab_home):
    """The demo model (the tiny Qwen2.5-VL) with cpu_demo's settings and method qlora, in the app's job: the
    mid-run evaluation (loss and answers, in eval mode without gradients) is followed by more training steps,
    and the 4-bit base weights are as a fresh 4-bit load gives them afterwards."""
    from test_base_model import assert_same_weights, base_weights

    from lab.handle import ModelHandle
    from lab.models import load_model
    from lab.quantization import bitsandbytes_problem
    from lab.training import job as jobs

    problem = bitsandbytes_problem("4bit", "cpu")
    assert problem is None, problem  # bitsandbytes runs 4-bit layers on the CPU since 0.49
    path = tiny_models("qwen2_5_vl")
    cfg = TrainConfig.from_preset(
        "cpu_demo",
        [
            f"model={path}",
            "method=qlora",
            "train_language=false",
            "lora_targets=[language, merger]",
            "max_steps=5",
            "eval_steps=2",
            "eval_metrics=[rouge_l]",
            "eval_samples=2",
            "eval_max_new_tokens=8",
            "run_name=qlora",
        ],
    )
    handle = ModelHandle()
    handle.load(str(path))
    job = jobs.start_training(cfg, handle)
    assert job.wait(600) and job.status == "finished", job.message
    rows = log_rows(read_metrics(job.run_dir))
    assert [r["step"] for r in rows if r.get("loss") is not None] == [1, 2, 3, 4, 5]
    assert {2, 4} <= {r["step"] for r in rows if r.get("eval_loss") is not None}  # mid-run, then steps 3 and 5
    assert all(r["eval_rouge_l"] is not None for r in rows if r.get("eval_loss") is not None)
    assert handle.loaded.quantization == "4bit" and handle.loaded.adapter == "qlora"
    fresh = load_model(path, device="cpu", quantization="4bit").model.state_dict()
    assert_same_weights(base_weights(handle.loaded.model), fresh)
