"""Packing: a step's samples in one row computes what the padded batch computes, and is refused where it cannot."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lab.errors import ConfigError
from lab.train_config import TrainConfig
from lab.training.collator import LossCollator, RopeIndex, TrainDataset
from lab.training.data import build_data
from lab.training.encode import IGNORE

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


@pytest.fixture(scope="module")
def float32(tiny_models):
    """``float32(family) -> LoadedModel``, the tiny model in float32, once per module."""
    from lab.models import load_model

    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = load_model(str(tiny_models(family)), dtype="float32")
        return cache[family]

    return get


def three_samples(processor, sample_dataset):
    """The longest and a middle sample (with pictures) around the shortest (a text-only identity sample)."""
    cfg = TrainConfig(
        dataset=str(sample_dataset), val_ratio=0.0, identity=True, model_name=["A", "B"], model_author=["C", "D"]
    )
    samples = sorted(build_data(cfg, processor, lambda _: None).train, key=lambda s: s.length)
    chosen = [samples[-1], samples[0], samples[len(samples) // 2]]
    assert len({s.length for s in chosen}) == 3 and not chosen[1].images and chosen[0].images and chosen[2].images
    dataset = TrainDataset(chosen, processor)
    return [dataset[i] for i in range(len(chosen))]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_packed_row_keeps_each_sample_its_tokens_labels_and_positions(float32, sample_dataset, family):
    import torch

    loaded = float32(family)
    items = three_samples(loaded.processor, sample_dataset)
    rope, pad_id = RopeIndex.of(loaded.model), loaded.processor.tokenizer.pad_token_id
    padded = LossCollator(pad_id, 8, rope)(items)
    packed = LossCollator(pad_id, 8, rope, packing=True)(items)
    lengths = [item["input_ids"].shape[0] for item in items]
    total = sum(lengths)
    width = packed["input_ids"].shape[1]
    assert packed["input_ids"].shape[0] == 1 and width % 8 == 0 and total <= width < total + 8
    assert "attention_mask" not in packed and packed["sample_lengths"].tolist() == lengths
    assert torch.equal(packed["pixel_values"], padded["pixel_values"])
    assert torch.equal(packed["image_grid_thw"], padded["image_grid_thw"])
    positions = packed["position_ids"]
    assert positions.shape == (4, 1, width)
    start = 0
    for i, n in enumerate(lengths):
        piece = slice(start, start + n)
        assert torch.equal(packed["input_ids"][0, piece], items[i]["input_ids"])
        # The first token is nobody's target; the rest keep their labels.
        assert packed["labels"][0, start] == IGNORE
        assert torch.equal(packed["labels"][0, start + 1 : start + n], items[i]["labels"][1:])
        assert torch.equal(positions[0, 0, piece], torch.arange(n))  # text positions restart
        assert torch.equal(positions[1:, 0, piece], padded["position_ids"][:, i, :n])  # the padded batch's 3-D ones
        start += n
    assert (packed["input_ids"][0, total:] == pad_id).all() and (packed["labels"][0, total:] == IGNORE).all()
    assert torch.equal(positions[0, 0, total:], torch.arange(width - total))  # the padding is a piece of its own
    # The loss looks at the same targets in the same order, and never across a boundary.
    assert torch.equal(packed["loss_targets"], padded["loss_targets"])
    learned_at = packed["loss_positions"][packed["loss_index"]]
    ends = {start - 1 for start in torch.tensor(lengths).cumsum(0).tolist()}
    assert not ends & set(learned_at.tolist())


def lora_model(loaded, family_cfg: TrainConfig):
    import torch

    from lab.training.setup import prepare_model

    torch.manual_seed(0)  # the adapters' random starting weights, the same whatever ran before
    model = prepare_model(loaded.model, family_cfg).model
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # zero at the start, which would leave the A matrices without gradients
            param.data.normal_(0, 0.05)
    model.train()
    return model


def step(model, batch, *, packed_attention: bool):
    """The loss of ``batch`` as the lab's trainer computes it, and every trainable parameter's gradient."""
    import torch.nn.functional as F

    from lab.training.packing import use_packed_attention

    inputs = dict(batch)
    positions, index, targets = inputs.pop("loss_positions"), inputs.pop("loss_index"), inputs.pop("loss_targets")
    inputs.pop("labels"), inputs.pop("sample_lengths", None)
    model.zero_grad(set_to_none=True)
    restore = use_packed_attention(model) if packed_attention else (lambda: None)
    try:
        logits = model(**inputs, use_cache=False, logits_to_keep=positions).logits
        picked = logits.reshape(-1, logits.shape[-1]).index_select(0, index)
        loss = F.cross_entropy(picked, targets, reduction="sum") / targets.numel()
        loss.backward()
    finally:
        restore()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_packed_step_gives_the_padded_steps_loss_and_gradients(tiny_models, sample_dataset, family, monkeypatch):
    """float32, LoRA on the language model and the merger: the same loss and the same gradients;
    and without attention kept within each sample the loss is another one (the check can fail)."""
    import torch

    from lab.models import load_model
    from lab.training import packing

    loaded = load_model(str(tiny_models(family)), dtype="float32")
    cfg = TrainConfig(dataset=str(sample_dataset), lora_targets=["language", "merger"], lora_dropout=0.0)
    model = lora_model(loaded, cfg)
    items = three_samples(loaded.processor, sample_dataset)
    rope, pad_id = RopeIndex.of(model), loaded.processor.tokenizer.pad_token_id
    padded = LossCollator(pad_id, 8, rope)(items)
    packed = LossCollator(pad_id, 8, rope, packing=True)(items)
    reference, expected = step(model, padded, packed_attention=False)
    calls = []
    pieces = packing._causal_pieces
    monkeypatch.setattr(packing, "_causal_pieces", lambda *a: calls.append(a[3]) or pieces(*a))
    loss, grads = step(model, packed, packed_attention=True)
    # Our attention kept the samples apart in every layer (stock SDPA would build a tokens x tokens mask).
    layers = loaded.model.config.get_text_config().num_hidden_layers
    expected_pieces = [item["input_ids"].shape[0] for item in items]
    padding = packed["input_ids"].shape[1] - sum(expected_pieces)
    expected_pieces += [padding] if padding else []  # the padding is a piece of its own
    assert len(calls) == layers and all(lengths == expected_pieces for lengths in calls)
    assert abs(loss - reference) <= 1e-5 * abs(reference), (loss, reference)
    assert grads.keys() == expected.keys() and len(grads) > 0
    for name, grad in grads.items():
        assert torch.allclose(grad, expected[name], rtol=1e-4, atol=1e-7), name
    # The same row with text positions that never restart: the attention sees one long sample.
    leaking = dict(packed, position_ids=packed["position_ids"].clone())
    leaking["position_ids"][0] = torch.arange(leaking["position_ids"].shape[-1])
    crossed, leaked = step(model, leaking, packed_attention=True)
    assert abs(crossed - reference) > 1e-4 * abs(reference), (crossed, reference)
    assert max(((leaked[n] - expected[n]).norm() / expected[n].norm()).item() for n in expected) > 0.1


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_packed_attention_is_causal_sdpa_within_each_piece(kv_heads):
    import torch
    import torch.nn.functional as F

    from lab.training.packing import packed_sdpa

    torch.manual_seed(0)
    lengths = [5, 3, 5, 2]  # two pieces share a length: one call for both
    seq = sum(lengths)
    q = torch.randn(1, 4, seq, 8)
    k, v = torch.randn(1, kv_heads, seq, 8), torch.randn(1, kv_heads, seq, 8)
    positions = torch.cat([torch.arange(n) for n in lengths])[None]
    out, _ = packed_sdpa(None, q, k, v, position_ids=positions, scaling=0.3)
    assert out.shape == (1, seq, 4, 8)
    start, expected = 0, []
    for n in lengths:
        piece = [t[:, :, start : start + n] for t in (q, k, v)]
        groups = 4 // kv_heads
        piece[1], piece[2] = piece[1].repeat_interleave(groups, 1), piece[2].repeat_interleave(groups, 1)
        expected.append(F.scaled_dot_product_attention(*piece, is_causal=True, scale=0.3))
        start += n
    assert torch.allclose(out, torch.cat(expected, dim=2).transpose(1, 2), atol=1e-6)


def test_a_padded_batch_is_computed_as_before_while_packed_attention_is_on(float32, sample_dataset):
    """Evaluation answers and a last batch of one sample are not packed: SDPA with its mask takes them."""
    import torch

    from lab.training.packing import use_packed_attention

    loaded = float32("qwen2_5_vl")
    items = three_samples(loaded.processor, sample_dataset)
    batch = LossCollator(loaded.processor.tokenizer.pad_token_id, 8, RopeIndex.of(loaded.model))(items)
    inputs = {k: v for k, v in batch.items() if not k.startswith("loss_") and k != "labels"}
    with torch.no_grad():
        stock = loaded.model(**inputs).logits
        restore = use_packed_attention(loaded.model)
        try:
            assert loaded.model.config.get_text_config()._attn_implementation == "lab_packed_sdpa"
            switched = loaded.model(**inputs).logits
        finally:
            restore()
    assert loaded.model.config.get_text_config()._attn_implementation == "sdpa"
    assert torch.allclose(switched, stock, atol=1e-5)


def test_packing_is_refused_with_a_sentence_where_it_cannot_apply():
    with pytest.raises(ConfigError, match="per_device_batch_size above 1"):
        TrainConfig(packing=True, per_device_batch_size=1)
    with pytest.raises(ConfigError, match="trainer 'grpo'"):
        TrainConfig(packing=True, trainer="grpo")
    assert TrainConfig(trainer="grpo").packing is False  # off unless asked for


def test_a_model_without_qwen_positions_is_refused_and_qwen_models_and_the_demo_are_not(
    tiny_models, sample_dataset, lab_home
):
    from lab.training.packing import model_refusal

    assert model_refusal(str(tiny_models("qwen2_5_vl"))) is None
    assert model_refusal("demo") is None  # the demo model is built only when a run loads it
    other = lab_home / "models" / "plain-llava"  # a family without 3-D positions
    other.mkdir(parents=True)
    (other / "config.json").write_text(json.dumps({"model_type": "llava"}), encoding="utf-8")
    assert "Qwen-VL's 3-D positions" in str(model_refusal(str(other)))


def run_cli(*args: str):
    return subprocess.run([sys.executable, "-m", "lab", *args], capture_output=True, text=True, timeout=600)


def test_the_cli_refuses_packing_where_it_cannot_apply_before_a_model_loads(lab_home, sample_dataset):
    other = lab_home / "models" / "plain-llava"
    other.mkdir(parents=True)
    (other / "config.json").write_text(json.dumps({"model_type": "llava"}), encoding="utf-8")
    data = f"dataset={sample_dataset}"
    for overrides, sentence in (
        (["per_device_batch_size=1"], "packing lays the samples of a batch end to end"),
        ([f"model={other}", "per_device_batch_size=2"], "packing needs a model with Qwen-VL's 3-D positions"),
    ):
        done = run_cli("train", "--preset", "cpu_demo", "--set", "run_name=p", data, "packing=true", *overrides)
        assert done.returncode == 2, done.stderr
        assert sentence in done.stderr + done.stdout and "Traceback" not in done.stderr
        assert not (lab_home / "checkpoints" / "p").exists()  # refused before a run folder or a model


def test_a_packed_run_records_its_choice(tiny_models, sample_dataset, lab_home):
    import math

    from lab.training.metrics import log_rows, read_metrics
    from lab.training.runner import run_training
    from lab.training.runs import CONFIG_FILE

    cfg = TrainConfig.from_preset(
        "cpu_demo",
        [f"model={tiny_models('qwen2_5_vl')}", f"dataset={sample_dataset}", "run_name=packed", "max_steps=2"],
    )
    assert cfg.packing is False  # the preset does not pack
    cfg.packing = True
    result = run_training(cfg, log=lambda line: None)
    saved = TrainConfig.from_yaml(result.run_dir / CONFIG_FILE)
    assert saved.packing is True and saved.per_device_batch_size == 4
    losses = [r["loss"] for r in log_rows(read_metrics(result.run_dir)) if r.get("loss") is not None]
    assert len(losses) == 2 and all(math.isfinite(loss) for loss in losses)


def test_throughput_counts_the_samples_and_tokens_of_a_packed_row():
    import torch

    from lab.training.metrics import Throughput
    from lab.training.packing import pack

    items = [{"input_ids": torch.ones(n, dtype=torch.long), "labels": torch.ones(n, dtype=torch.long)} for n in (5, 3)]
    batch = pack(items, pad_token_id=0, multiple=8)
    assert batch["input_ids"].shape == (1, 8) and batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2]]
    counted = Throughput()
    counted.add(batch, batch["sample_lengths"])
    assert counted.take() == (2, 8)
