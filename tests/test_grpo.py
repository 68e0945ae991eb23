"""GRPO on the tiny models: the advantage and the loss by hand, answers back into tensors, one step that moves
every trainable weight with the KL at 0 before it, the mean reward rising, the preset from the CLI."""

from __future__ import annotations

import json
import math

import pytest

from lab.generate import Generation
from lab.train_config import TrainConfig
from lab.training import grpo, grpo_objective
from lab.training.grpo_data import answer_ids, build_batch, load_prompts
from lab.training.metrics import log_rows, read_metrics


def test_advantages_are_relative_to_each_group():
    import torch

    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0, 0.0, 0.5, 1.0, 0.5])
    advantages = grpo_objective.group_advantages(rewards, 4).tolist()
    # First group: mean 0.5, sample std sqrt(4 * 0.25 / 3) = 0.5774 (plus eps 1e-4).
    assert advantages[:4] == pytest.approx([0.8659, -0.8659, -0.8659, 0.8659], abs=1e-4)
    assert advantages[4:8] == [0.0, 0.0, 0.0, 0.0]  # all scored 2: the group teaches nothing (eps keeps it finite)
    assert advantages[8:] == pytest.approx([-1.2245, 0.0, 1.2245, 0.0], abs=1e-4)  # std sqrt(0.5 / 3)


def test_the_loss_clips_the_ratio_and_the_kl_is_zero_on_the_reference():
    import torch

    # Two answers of two tokens each; the policy moved since sampling: ratio e^0.5 = 1.65 on every token.
    logps = torch.tensor([-1.0, -2.0, -1.0, -2.0], requires_grad=True)
    old = logps.detach() - 0.5
    rows, advantages = torch.tensor([0, 0, 1, 1]), torch.tensor([1.0, -1.0])
    loss, kl = grpo_objective.grpo_loss(logps, old, logps.detach(), advantages, rows, beta=0.1, epsilon=0.2)
    # Answer 0 (A = 1) is clipped at 1.2: no gradient. Answer 1 (A = -1) keeps the ratio: -(-1.65).
    assert loss.item() == pytest.approx((-1.2 + math.exp(0.5)) / 2, abs=1e-5)
    assert kl.item() == 0.0
    loss.backward()
    assert logps.grad[:2].tolist() == [0.0, 0.0]
    assert logps.grad[2:].tolist() == pytest.approx([math.exp(0.5) / 4] * 2, abs=1e-5)
    # With one update per batch of answers the ratio is 1 and the loss is plain policy gradient: mean(-A).
    fresh = torch.tensor([-1.0, -2.0, -1.0, -2.0], requires_grad=True)
    loss, _ = grpo_objective.grpo_loss(fresh, None, None, torch.tensor([1.0, 3.0]), rows, beta=0.1, epsilon=0.2)
    assert loss.item() == pytest.approx(-2.0)
    # The KL estimator: exp(ref - logp) - (ref - logp) - 1, averaged over an answer's tokens.
    _, kl = grpo_objective.grpo_loss(
        fresh, None, fresh.detach() + torch.tensor([1.0, 0.0, 0.0, 0.0]), advantages, rows, 0.1, 0.2
    )
    assert kl.item() == pytest.approx((math.e - 2) / 2 / 2)


def test_grpo_settings_that_cannot_work_are_refused_when_the_config_is_made():
    from lab.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^trainer 'grpo' trains on one GPU \(or the CPU\); set num_gpus to 1\.$"):
        TrainConfig(trainer="grpo", num_gpus=2)
    with pytest.raises(ConfigError, match=r"^max_new_tokens \(600\) leaves no room for the prompt within max_length"):
        TrainConfig(trainer="grpo", max_new_tokens=600, max_length=512)
    with pytest.raises(ConfigError, match="num_generations must be at least 2"):
        TrainConfig(trainer="grpo", num_generations=1)
    with pytest.raises(ConfigError, match="keeps no best checkpoint"):
        TrainConfig(trainer="grpo", keep_best=True, val_ratio=0.1)
    TrainConfig(num_gpus=2, max_new_tokens=600, max_length=512)  # an SFT run does not sample


def test_answers_are_sampled_from_the_plain_distribution_without_image_placeholders(loaded):
    from lab.generate import _generate_kwargs

    tiny = loaded("qwen2_5_vl")
    plain = _generate_kwargs(tiny, 8, 0, 1.0, 1.0, plain=True)
    assert plain["top_k"] == 0 and plain["repetition_penalty"] == 1.0 and plain["do_sample"] is True
    assert plain["suppress_tokens"] == [tiny.processor.image_token_id, tiny.processor.video_token_id]
    assert "suppress_tokens" not in _generate_kwargs(tiny, 8, 0, 1.0, 1.0)  # chat and evaluation are unchanged


def test_answers_come_back_as_the_prompt_then_the_sampled_tokens(loaded):
    import torch

    from lab.images import open_image
    from lab.training.collator import LossCollator, RopeIndex

    tiny = loaded("qwen2_5_vl")
    processor = tiny.processor
    cfg = TrainConfig(
        model="x", dataset="data/sample/data_json_en.jsonl", trainer="grpo", val_ratio=0.0, max_new_tokens=8
    )
    prompts = load_prompts(cfg, processor, log=lambda _: None).train[:2]
    assert len(prompts) == 2 and prompts[0].reference.startswith('{"component"') and prompts[0].images
    end = processor.tokenizer.convert_tokens_to_ids("<|im_end|>")
    answers = [
        Generation("", 0, 3, 0.0, [10, 11, 12], end),
        Generation("", 0, 2, 0.0, [13, 14], None),
        Generation("", 0, 1, 0.0, [15], end),
        Generation("", 0, 4, 0.0, [16, 17, 18, 19], None),
    ]
    images = [[open_image(p) for p in prompt.images] for prompt in prompts]
    batch = build_batch(
        processor, prompts, images, answers, LossCollator(processor.tokenizer.pad_token_id, 1, RopeIndex.of(tiny.model))
    )
    # The learned tokens are exactly the answers as sampled, each closed by its end token if it had one.
    assert batch["loss_targets"].tolist() == [10, 11, 12, end, 13, 14, 15, end, 16, 17, 18, 19]
    prompt_ids = processor(text=[prompts[0].text], images=images[0], return_tensors="pt")["input_ids"][0].tolist()
    assert batch["input_ids"][0, : len(prompt_ids) + 4].tolist() == prompt_ids + answer_ids(answers[0])
    assert batch["pixel_values"].shape[0] == 4 * (batch["pixel_values"].shape[0] // 4)  # each answer sees its image
    # The lean log-probabilities equal the full logits' at the answer positions.
    with torch.no_grad():
        lean = grpo_objective.token_logps(tiny.model, batch, temperature=0.7)
        inputs = {k: v for k, v in batch.items() if k not in grpo_objective.LOSS_KEYS}
        full = (tiny.model(**inputs).logits[:, :-1].float() / 0.7).log_softmax(-1)
    labels = batch["labels"][:, 1:]
    expected = full.gather(2, labels.clamp(min=0)[..., None]).squeeze(2)[labels != -100]
    assert torch.allclose(lean, expected, atol=1e-5)


def grpo_config(model_dir, **changes) -> TrainConfig:
    settings = dict(
        model=str(model_dir),
        dataset="data/sample/data_json_en.jsonl",
        trainer="grpo",
        rewards=["length"],
        target_length=1,
        num_generations=4,
        max_new_tokens=6,
        per_device_batch_size=1,
        gradient_accumulation_steps=1,
        max_steps=1,
        logging_steps=1,
        val_ratio=0.0,
        dtype="float32",
        gradient_checkpointing=False,
        min_pixels=3136,
        max_pixels=3136,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        learning_rate=1e-2,
        run_name="grpo",
    )
    return TrainConfig(**{**settings, **changes})


def trained_weights(monkeypatch) -> list[dict]:
    """The trainable weights as the first update finds them (appended once the run takes its first step)."""
    seen: list[dict] = []
    update = grpo.update

    def spy(run, rollouts):
        if not seen:
            seen.append({n: p.detach().clone() for n, p in run.model.named_parameters() if p.requires_grad})
        return update(run, rollouts)

    monkeypatch.setattr(grpo, "update", spy)
    return seen


def unchanged(before: dict, model) -> list[str]:
    import torch

    after = dict(model.named_parameters())
    return [name for name, value in before.items() if torch.equal(value, after[name].detach())]


@pytest.fixture(scope="module")
def sampled_model(tiny_models, tmp_path_factory):
    """The Qwen2.5-VL stand-in with a random embedding row for every id, so that every answer depends on the input.

    The stand-in zeroes the rows of its filler tokens (``lab.tiny._quiet_unused_rows``), so their logits are 0
    whatever the input. GRPO samples from the plain distribution, where about 98% of the mass is on those fillers:
    a group's answers then differ in log-probability only by their shared normaliser, which the zero-mean
    advantages cancel, and nothing below the output layer gets a gradient (1e-14 on the vision norms). A trained
    model's answers depend on the picture and the prompt; these tests need that, not the fillers' zeros.
    """
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("sampled") / "qwen2_5_vl"
    shutil.copytree(tiny_models("qwen2_5_vl"), folder)
    weights = load_file(folder / "model.safetensors")
    (name,) = [n for n in weights if n.endswith("embed_tokens.weight")]
    zero = weights[name].abs().sum(dim=1) == 0
    assert zero.sum() > 100_000  # the fillers, as the stand-in builds them
    noise = torch.randn(int(zero.sum()), weights[name].shape[1], generator=torch.Generator().manual_seed(0))
    weights[name][zero] = (0.02 * noise).to(weights[name].dtype)
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_one_full_step_moves_every_trainable_weight_and_starts_at_kl_zero(sampled_model, monkeypatch):
    from lab.training.runner import run_training

    before = trained_weights(monkeypatch)
    cfg = grpo_config(
        sampled_model,
        method="full",
        train_language=True,
        train_merger=True,
        train_vision=True,
        beta=0.1,
        gradient_checkpointing=True,
    )
    result = run_training(cfg, log=lambda _: None)
    assert result.status == "finished" and result.step == 1 and not result.is_peft
    assert len(before[0]) == len(list(result.model.parameters())) and unchanged(before[0], result.model) == []
    (row,) = log_rows(read_metrics(result.run_dir))
    assert row["kl"] == 0.0 and row["rewards"] == {"length": row["reward"]} and 0 < row["reward"] < 1
    assert row["completion_length"] > 0 and row["loss"] is not None and row["grad_norm"] > 0


def test_lora_steps_move_every_adapter_weight_against_the_model_with_the_adapter_off(sampled_model, monkeypatch):
    from lab.training.runner import run_training

    before = trained_weights(monkeypatch)
    cfg = grpo_config(
        sampled_model,
        method="lora",
        lora_targets=["language", "merger"],
        lora_dropout=0.0,
        beta=0.1,
        max_steps=2,
        num_iterations=2,
        gradient_accumulation_steps=2,
    )
    result = run_training(cfg, log=lambda _: None)
    # LoRA's B starts at 0, so A learns from the second step on; after two every adapter weight has moved.
    assert result.is_peft and unchanged(before[0], result.model) == []
    assert all("lora_" in name for name in before[0])
    first, second = log_rows(read_metrics(result.run_dir))
    assert first["kl"] == 0.0 < second["kl"]  # the reference is the base: the adapter switched off
    assert (result.run_dir / "adapter_model.safetensors").is_file() and (result.run_dir / "config.yaml").is_file()
    assert read_metrics(result.run_dir)[0]["trainer"] == "grpo" and read_metrics(result.run_dir)[-1]["event"] == "end"


@pytest.mark.slow
def test_the_mean_reward_rises_on_a_learnable_reward(tiny_models):
    """Short answers (the length reward with a target of one character) are learnable by the tiny random model."""
    from lab.training.runner import run_training

    cfg = grpo_config(
        tiny_models("qwen2_5_vl"),
        method="full",
        train_language=True,
        beta=0.0,
        num_generations=8,
        max_steps=30,
        learning_rate=2e-2,
        seed=7,
    )
    result = run_training(cfg, log=lambda _: None)
    rewards = [row["reward"] for row in log_rows(read_metrics(result.run_dir))]
    assert len(rewards) == 30
    start, end = sum(rewards[:5]) / 5, sum(rewards[-5:]) / 5
    assert end > 2 * start, str(rewards)


def test_the_grpo_preset_runs_from_the_cli(tiny_models, lab_home, capsys):
    from lab.cli import main

    model = tiny_models("qwen2_5_vl")
    code = main(
        [
            "train",
            "--preset",
            "grpo_json",
            "--set",
            f"model={model}",
            "max_steps=2",
            "num_generations=2",
            "max_new_tokens=4",
            "per_device_batch_size=1",
            "gradient_accumulation_steps=1",
            "run_name=cli",
            "gradient_checkpointing=false",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    run_dir = lab_home / "checkpoints" / "cli"
    rows = log_rows(read_metrics(run_dir))
    assert [r["step"] for r in rows] == [1, 2] and set(rows[0]["rewards"]) == {"json_valid", "json_key_f1"}
    assert "reward " in out and "kl " in out  # the echoed lines
    saved = TrainConfig.from_yaml(run_dir / "config.yaml")
    assert saved.trainer == "grpo" and saved.rewards == ["json_valid", "json_key_f1:0.5"]
    assert json.loads((run_dir / "adapter_config.json").read_text())["r"] == 16


def test_a_stopped_grpo_run_resumes_from_its_checkpoint_to_the_same_curve(sampled_model, lab_home, monkeypatch):
    """Stopped after step 2 and resumed, a run takes the steps an uninterrupted one takes, to the bit: the
    checkpoint holds the weights, the optimizer, the prompt order and the random state the answers are drawn from."""
    import threading

    import torch
    from safetensors.torch import load_file

    from lab.training.runner import run_training
    from lab.training.runs import checkpoints, latest_checkpoint, load_run_config

    def cfg(name):
        return grpo_config(
            sampled_model,
            method="lora",
            lora_targets=["language"],
            lora_dropout=0.0,
            beta=0.1,
            max_steps=5,
            save_steps=2,
            save_total_limit=2,
            run_name=name,
        )

    whole = run_training(cfg("whole"), log=lambda _: None)
    stop, calls, update = threading.Event(), [], grpo.update

    def stop_in_step_three(run, rollouts):
        calls.append(1)
        if len(calls) == 3:
            stop.set()
        return update(run, rollouts)

    monkeypatch.setattr(grpo, "update", stop_in_step_three)
    stopped = run_training(cfg("parts"), stop=stop, log=lambda _: None)
    monkeypatch.setattr(grpo, "update", update)
    assert stopped.status == "stopped" and stopped.step == 3
    assert latest_checkpoint(stopped.run_dir).name == "checkpoint-3"
    resumed = run_training(load_run_config(stopped.run_dir), resume=True, log=lambda _: None)
    assert resumed.status == "finished" and resumed.step == 5

    def curve(run_dir):
        keys = ("step", "loss", "kl", "reward", "grad_norm", "lr", "completion_length")
        return [{k: row.get(k) for k in keys} for row in log_rows(read_metrics(run_dir))]

    assert curve(resumed.run_dir) == curve(whole.run_dir) and len(curve(whole.run_dir)) == 5
    ours, theirs = (load_file(str(r.run_dir / "adapter_model.safetensors")) for r in (resumed, whole))
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    starts = [r for r in read_metrics(resumed.run_dir) if r.get("event") == "start"]
    assert [(s["resumed"], s["step"]) for s in starts] == [(False, 0), (True, 3)]
    assert [p.name for p in checkpoints(whole.run_dir)] == ["checkpoint-4", "checkpoint-5"]  # save_total_limit 2
