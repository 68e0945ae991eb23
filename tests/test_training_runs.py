"""Real training runs of the tiny model on the CPU: what trains changes, what is frozen does not,
the run folder holds what it should, the loss falls, stop and resume keep the curve."""

from __future__ import annotations

import math
import threading

import pytest
from conftest import families

from lab.errors import localize
from lab.train_config import TrainConfig
from lab.training.metrics import last_event, log_rows, read_metrics
from lab.training.runner import oom_advice, run_training
from lab.training.runs import checkpoints, describe_run, latest_checkpoint, load_run_config


def tiny_config(tiny_models, **overrides) -> TrainConfig:
    settings = dict(
        model=str(tiny_models("qwen2_5_vl")),
        dataset="data/sample",
        max_steps=3,
        per_device_batch_size=2,
        gradient_accumulation_steps=1,
        learning_rate=1e-2,
        logging_steps=1,
        eval_steps=2,
        save_steps=100,
        val_ratio=0.1,
        warmup_ratio=0.0,
        lora_dropout=0.0,
        gradient_checkpointing=True,
        dtype="float32",
        run_name="run",
    )
    return TrainConfig(**{**settings, **overrides})


def snapshot_callback(store: dict):
    """A TrainerCallback that copies every parameter when training begins (adapters already in place)."""
    from transformers import TrainerCallback

    class Snapshot(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, **kwargs):
            store.update({n: (p.detach().clone(), p.requires_grad) for n, p in model.named_parameters()})

    return Snapshot()


def train_and_compare(cfg):
    """Train ``cfg`` and return (result, changed trainable names, unchanged trainable, changed frozen)."""
    before: dict = {}
    result = run_training(cfg, log=lambda _: None, callbacks=[snapshot_callback(before)])
    after = dict(result.model.named_parameters())
    changed = {n for n, (p, _) in before.items() if not p.equal(after[n].detach())}
    trainable = {n for n, (_, grad) in before.items() if grad}
    return result, changed & trainable, trainable - changed, changed - trainable


def assert_logged(run_dir, steps: int):
    records = read_metrics(run_dir)
    rows = [r for r in log_rows(records) if r.get("loss") is not None]
    assert [r["step"] for r in rows] == list(range(1, steps + 1))
    assert all(math.isfinite(r["loss"]) and r["tokens_per_s"] > 0 and r["lr"] is not None for r in rows)
    assert [r["event"] for r in records if "event" in r] == ["start", "end"]
    assert any(r.get("eval_loss") is not None for r in log_rows(records))


@pytest.mark.parametrize("targets", [["language", "vision", "merger"], ["language"]])
def test_lora_run_trains_adapters_only(tiny_models, lab_home, targets):
    cfg = tiny_config(tiny_models, lora_targets=targets)
    result, changed, unchanged, frozen_changed = train_and_compare(cfg)
    assert changed and not unchanged and not frozen_changed
    assert all("lora_" in n for n in changed)
    if targets == ["language"]:
        assert not any(".visual." in n for n in changed)  # vision tower and merger frozen
    run_dir = lab_home / "checkpoints" / "run"
    assert result.run_dir == run_dir and result.status == "finished" and result.is_peft
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "processor_config.json",
    ):
        assert (run_dir / name).is_file(), name
    assert load_run_config(run_dir) == cfg
    assert_logged(run_dir, 3)


# Which weights learn, per mode: (settings, the parts that must change). Every part is trained in one
# mode and frozen in another; LoRA sits next to a fully trained part, and QLoRA runs on 4-bit weights.
MODES = {
    "lora+full_merger": (
        dict(lora_targets=["language", "vision"], train_merger=True),
        {"language", "vision", "merger"},
    ),
    "lora_vision_only": (dict(lora_targets=["vision"]), {"vision"}),
    "full_frozen_vision": (
        dict(method="full", lora_targets=[], train_language=True, train_merger=True),
        {"language", "merger"},
    ),
    "qlora_language": (dict(method="qlora", lora_targets=["language"]), {"language"}),
}


def _parts_of(names: set[str], groups: dict) -> set[str]:
    """The parts (vision / merger / language) the parameters ``names`` belong to, under PEFT's names too."""
    from lab.model_parts import in_group

    bare = {
        n.replace("base_model.model.", "", 1)
        .replace(".base_layer", "")
        .replace(".modules_to_save.default", "")
        .replace(".original_module", "")
        for n in names
    }
    return {part for part, prefixes in groups.items() for n in bare if in_group(n, prefixes)}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("family", families(slow_beyond=("qwen2_5_vl",)))
def test_every_family_trains_the_parts_asked_and_nothing_else(tiny_models, lab_home, family, mode):
    from lab.model_parts import module_groups
    from lab.models import load_model
    from lab.quantization import bitsandbytes_problem

    settings, parts = MODES[mode]
    if settings.get("method") == "qlora" and (problem := bitsandbytes_problem("4bit", "cpu")):
        pytest.skip(problem)
    groups = module_groups(load_model(tiny_models(family)).model)
    cfg = tiny_config(tiny_models, model=str(tiny_models(family)), max_steps=2, val_ratio=0.0, **settings)
    result, changed, unchanged, frozen_changed = train_and_compare(cfg)
    assert changed and not unchanged and not frozen_changed and result.step == 2
    assert _parts_of(changed, groups) == parts


def test_the_same_seed_gives_the_same_run_and_another_seed_another(tiny_models, lab_home):
    """The adapters' random starting weights come from the run's seed too (the Trainer seeds only after
    the model is prepared): two runs of one config in one process train alike, to the bit."""
    import torch
    from safetensors.torch import load_file

    def run(name: str, seed: int):
        run_training(tiny_config(tiny_models, run_name=name, seed=seed, lora_targets=["language"]), log=lambda _: None)
        folder = lab_home / "checkpoints" / name
        losses = [r["loss"] for r in log_rows(read_metrics(folder)) if r.get("loss") is not None]
        return losses, load_file(str(folder / "adapter_model.safetensors"))

    losses, weights = run("a", 42)
    again_losses, again = run("b", 42)
    _, other = run("c", 7)
    assert losses == again_losses and len(losses) >= 3
    assert weights.keys() == again.keys() and all(torch.equal(weights[k], again[k]) for k in weights)
    starts = [k for k in weights if "lora_A" in k]
    assert starts and not any(torch.equal(weights[k], other[k]) for k in starts)


def test_full_run_with_frozen_vision_trains_the_language_model_and_merger(tiny_models, lab_home):
    cfg = tiny_config(tiny_models, method="full", lora_targets=[], train_language=True, train_merger=True)
    result, changed, unchanged, frozen_changed = train_and_compare(cfg)
    assert not unchanged and not frozen_changed
    assert any("language_model" in n for n in changed) and any(".merger." in n for n in changed)
    assert not any(".visual.blocks" in n or "patch_embed" in n for n in changed)
    run_dir = lab_home / "checkpoints" / "run"
    assert not result.is_peft and (run_dir / "model.safetensors").is_file() and (run_dir / "config.json").is_file()
    assert_logged(run_dir, 3)


def test_lora_next_to_a_fully_trained_part(tiny_models, lab_home):
    cfg = tiny_config(tiny_models, lora_targets=["language"], train_merger=True)
    result, changed, unchanged, frozen_changed = train_and_compare(cfg)
    assert not unchanged and not frozen_changed
    assert any("modules_to_save" in n and "merger" in n for n in changed)
    from safetensors import safe_open

    with safe_open(str(lab_home / "checkpoints" / "run" / "adapter_model.safetensors"), "pt") as f:
        assert any("merger" in key for key in f.keys())  # the adapter folder is complete on its own


def test_overfitting_the_sample_set(tiny_models, lab_home):
    cfg = TrainConfig.from_preset("cpu_demo", ["max_steps=30", "val_ratio=0", "run_name=overfit"])
    cfg.model = str(tiny_models("qwen2_5_vl"))
    result = run_training(cfg, log=lambda _: None)
    losses = [r["loss"] for r in log_rows(read_metrics(result.run_dir)) if r.get("loss") is not None]
    assert len(losses) == 30
    assert min(losses[-5:]) < 0.6 * losses[0], losses


def test_qlora_runs_where_bitsandbytes_works(tiny_models, lab_home):
    from lab.models import resolve_device
    from lab.quantization import bitsandbytes_problem

    problem = bitsandbytes_problem("4bit", resolve_device("auto"))
    if problem:
        pytest.skip(problem)
    cfg = tiny_config(tiny_models, method="qlora", max_steps=2, val_ratio=0.0)
    result, changed, unchanged, frozen_changed = train_and_compare(cfg)
    assert changed and not unchanged and not frozen_changed
    assert (result.run_dir / "adapter_model.safetensors").is_file()


def test_stop_ends_after_the_current_step_and_resume_continues_the_curve(tiny_models, lab_home):
    from transformers import TrainerCallback

    stop = threading.Event()

    class StopAtTwo(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                stop.set()  # as if Stop were pressed during step 3

    cfg = tiny_config(tiny_models, max_steps=6, val_ratio=0.0)
    result = run_training(cfg, stop=stop, log=lambda _: None, callbacks=[StopAtTwo()])
    assert result.status == "stopped" and result.step == 3
    assert latest_checkpoint(result.run_dir).name == "checkpoint-3"
    assert describe_run(result.run_dir).status == "stopped"

    resumed = run_training(load_run_config(result.run_dir), resume=True, log=lambda _: None)
    assert resumed.status == "finished" and resumed.step == 6
    records = read_metrics(result.run_dir)
    rows = [r for r in log_rows(records) if r.get("loss") is not None]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    elapsed = [r["elapsed_s"] for r in rows]
    assert elapsed == sorted(elapsed)  # the clock carries on from the first session
    starts = [r for r in records if r.get("event") == "start"]
    assert [s["resumed"] for s in starts] == [False, True] and starts[1]["step"] == 3
    assert last_event(records)["event"] == "end"
    assert [p.name for p in checkpoints(result.run_dir)][-1] == "checkpoint-6"


def test_a_run_killed_after_its_checkpoint_resumes_with_each_step_logged_once(tiny_models, lab_home):
    from transformers import TrainerCallback

    class Killed(BaseException):
        """Like SIGKILL: not an Exception, so the run writes no error event on its way out."""

    class KillAfterStepFive(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if state.global_step == 5 and "loss" in (logs or {}):
                raise Killed  # step 5 is logged; the last checkpoint is step 4's

    cfg = tiny_config(tiny_models, max_steps=6, save_steps=2, val_ratio=0.0)
    with pytest.raises(Killed):
        run_training(cfg, log=lambda _: None, callbacks=[KillAfterStepFive()])
    run_dir = lab_home / "checkpoints" / "run"
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write('{"step": 6, "loss": 0.')  # and killed in the middle of the next line
    assert [r["step"] for r in log_rows(read_metrics(run_dir))] == [1, 2, 3, 4, 5]
    assert latest_checkpoint(run_dir).name == "checkpoint-4"

    resumed = run_training(load_run_config(run_dir), resume=True, log=lambda _: None)
    assert resumed.status == "finished" and resumed.step == 6
    records = read_metrics(run_dir)
    assert [r["step"] for r in log_rows(records)] == [1, 2, 3, 4, 5, 6]  # 5 once: the killed session's 5 was cut
    elapsed = [r["elapsed_s"] for r in log_rows(records)]
    assert elapsed == sorted(elapsed)
    assert [(r["event"], r["step"]) for r in records if "event" in r] == [("start", 0), ("start", 4), ("end", 6)]
    assert all(line.endswith("}") for line in (run_dir / "metrics.jsonl").read_text().splitlines())


def test_out_of_memory_in_the_app_is_one_sentence_and_the_model_stays_usable(tiny_models, lab_home, monkeypatch):
    import torch
    from transformers import TrainerCallback

    from lab.handle import ModelHandle
    from lab.training import job as jobs

    class RunOutOfMemory(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    def train_until_oom(job, loaded):
        return run_training(job.config, loaded=loaded, stop=job.stop_event, log=job.log, callbacks=[RunOutOfMemory()])

    monkeypatch.setattr(jobs, "_train", train_until_oom)
    handle = ModelHandle()
    handle.load(str(tiny_models("qwen2_5_vl")))
    job = jobs.start_training(tiny_config(tiny_models, per_device_batch_size=2, gradient_checkpointing=False), handle)
    assert job.wait(120) and job.status == "failed"
    assert str(job.message).startswith(
        "Training ran out of computer memory; the memory is freed again, try a smaller per_device_batch_size"
    )
    assert "gradient_checkpointing: true" in str(job.message) and "Traceback" not in str(job.message)
    assert localize(job.message, "zh").startswith("训练时内存不足") and "per_device_batch_size" in localize(
        job.message, "zh"
    )
    # A reloaded page reads the reason back from the run folder, in every language.
    saved = describe_run(job.run_dir).message
    assert saved == job.message and localize(saved, "zh") == localize(job.message, "zh")
    assert last_event(read_metrics(job.run_dir)) == {**last_event(read_metrics(job.run_dir)), "event": "error"}
    # The adapters came off again: the handle holds the plain model, ready for chat.
    assert handle.state.value == "ready" and not hasattr(handle.loaded.model, "peft_config")
    assert not any(p.requires_grad for p in handle.loaded.model.parameters())
    with handle.use() as loaded:
        assert loaded.model.training is False


def test_one_run_at_a_time_and_a_queue_on_shared_deployments(tiny_models, lab_home):
    from lab.errors import BusyError
    from lab.handle import ModelHandle
    from lab.training import job as jobs

    handle = ModelHandle()
    handle.load(str(tiny_models("qwen2_5_vl")))
    first = jobs.start_training(tiny_config(tiny_models, run_name="first", max_steps=4, val_ratio=0.0), handle)
    with pytest.raises(BusyError, match="already going on"):
        jobs.start_training(tiny_config(tiny_models, run_name="refused"), handle)
    second = jobs.start_training(tiny_config(tiny_models, run_name="second", val_ratio=0.0), handle, queue=True)
    third = jobs.start_training(tiny_config(tiny_models, run_name="third"), handle, queue=True)
    assert second.status == third.status == "queued" and jobs.queue_position(third) == 2
    third.stop()  # leaves the queue without ever starting
    assert third.status == "stopped" and jobs.queue_position(third) == 0
    assert first.wait(120) and first.status == "finished", first.message
    assert second.wait(120) and second.status == "finished", second.message
    assert jobs.current_job() is second and not (third.run_dir / "metrics.jsonl").exists()
    assert handle.loaded.adapter == "second"


def test_a_run_name_in_use_is_refused_when_asked_for_and_its_files_stay(tiny_models, lab_home):
    from lab.errors import BusyError, ConfigError
    from lab.handle import ModelHandle
    from lab.training import job as jobs

    handle = ModelHandle()
    handle.load(str(tiny_models("qwen2_5_vl")))
    first = jobs.start_training(
        tiny_config(tiny_models, run_name="mine", max_steps=400, val_ratio=0.0), handle, queue=True
    )
    run_dir = first.run_dir
    while first.active and not log_rows(read_metrics(run_dir)):
        first.wait(0.2)
    assert first.status == "running", first.message
    config, logged = (run_dir / "config.yaml").read_bytes(), (run_dir / "metrics.jsonl").read_text().splitlines()
    later = jobs.start_training(tiny_config(tiny_models, run_name="later"), handle, queue=True)
    assert later.status == "queued" and not later.run_dir.exists()  # nothing is written before a run starts
    for name in ("mine", "later"):  # going on, waiting: refused at once, whatever the settings
        with pytest.raises(BusyError) as refused:
            jobs.start_training(tiny_config(tiny_models, run_name=name, learning_rate=0.5), handle, queue=True)
        assert str(refused.value) == (
            f"A run named {name} is already going on or waiting in the queue; "
            "choose another run_name or wait for it to end."
        )
        assert localize(refused.value, "zh") == f"名为 {name} 的训练正在进行或排队中；请换一个 run_name，或等它结束。"
    with pytest.raises(BusyError, match="A run named mine is already going on"):
        jobs.start_training(load_run_config(run_dir), handle, resume=True, queue=True)
    assert (run_dir / "config.yaml").read_bytes() == config
    assert (run_dir / "metrics.jsonl").read_text().splitlines()[: len(logged)] == logged  # only added to
    later.stop()
    first.stop()
    assert first.wait(120) and first.status == "stopped", first.message
    assert not later.run_dir.exists()

    # A stopped (or finished) run's folder is used again only to resume it.
    with pytest.raises(ConfigError, match="A run named mine already exists; choose another run_name or resume it."):
        jobs.start_training(tiny_config(tiny_models, run_name="mine"), handle)
    assert (run_dir / "config.yaml").read_bytes() == config
    cfg = load_run_config(run_dir)
    cfg.max_steps = describe_run(run_dir).step + 2
    resumed = jobs.start_training(cfg, handle, resume=True)
    assert resumed.wait(120) and resumed.status == "finished", resumed.message
    steps = [r["step"] for r in log_rows(read_metrics(run_dir)) if r.get("loss") is not None]
    assert steps == list(range(1, cfg.max_steps + 1))


def test_out_of_memory_advice_names_each_tip_once_in_both_languages():
    from types import SimpleNamespace

    cfg = SimpleNamespace(per_device_batch_size=1, gradient_checkpointing=True, method="qlora")
    advice = oom_advice(cfg, "cpu")
    assert str(advice) == (
        "Training ran out of computer memory; the memory is freed again, try fewer pixels per image (max_pixels)."
    )
    assert localize(advice, "zh") == "训练时内存不足，已重新释放；可以试试减少每张图片的像素（max_pixels）。"
    cfg = SimpleNamespace(per_device_batch_size=4, gradient_checkpointing=False, method="lora")
    assert localize(oom_advice(cfg, "cuda:0"), "zh").endswith(
        "开启 gradient_checkpointing（设为 true）或改用 qlora 方法。"
    )


def test_a_failure_is_read_back_in_every_language_and_older_runs_in_english(tmp_path):
    from lab.jobs import unexpected_failure
    from lab.text import saved_fields
    from lab.training.metrics import append_metrics
    from lab.training.runner import TRAINING

    new, old = tmp_path / "new", tmp_path / "old"
    for folder in (new, old):
        folder.mkdir()
    failure = unexpected_failure(TRAINING, KeyError("y"))  # as run_training saves an unexpected error
    append_metrics(new, {"event": "error", "time": 1.0, **saved_fields("message", failure)})
    # Runs saved before the catalogs kept a Chinese copy; the English is shown for them.
    append_metrics(
        old,
        {
            "event": "error",
            "time": 1.0,
            "message": "Training failed: KeyError: 'y'",
            "message_zh": "训练失败：KeyError: 'y'",
        },
    )
    assert not any(key.endswith("_zh") for key in last_event(read_metrics(new)))
    assert (
        describe_run(new).status == "failed" and localize(describe_run(new).message, "zh") == "训练失败：KeyError: 'y'"
    )
    assert describe_run(new).message == failure
    assert localize(describe_run(old).message, "zh") == describe_run(old).message == "Training failed: KeyError: 'y'"
