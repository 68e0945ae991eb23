"""Training data: label masking token by token, image-token expansion, overlong samples, batching, the loss."""

from __future__ import annotations

import json

import pytest

from lab.errors import ConfigError
from lab.train_config import TrainConfig
from lab.training.collator import IGNORE, Collator, TrainDataset, encode_sample
from lab.training.data import build_data
from lab.training.trainer import LossCollator

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "qwen3_vl"]


@pytest.fixture(scope="module")
def loaded_tiny(tiny_models):
    from lab.models import load_model

    cache = {}

    def get(family="qwen2_5_vl"):
        if family not in cache:
            cache[family] = load_model(str(tiny_models(family)))
        return cache[family]

    return get


def first_record(sample_dataset):
    record = json.loads((sample_dataset / "data.jsonl").read_text(encoding="utf-8").splitlines()[0])
    record["images"] = [str(sample_dataset / p) for p in record["images"]]
    return record


def processor_ids(processor, text, images):
    from lab.images import open_image

    out = processor(text=[text], images=[open_image(p) for p in images] or None, return_tensors="pt")
    return out["input_ids"][0].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_cover_the_answer_and_its_end_token_only(loaded_tiny, sample_dataset, family):
    processor = loaded_tiny(family).processor
    tokenizer = processor.tokenizer
    record = first_record(sample_dataset)
    sample = encode_sample(processor, record["id"], record["messages"], record["images"])

    # The ids are exactly what the processor makes of the text and the picture.
    assert sample.input_ids == processor_ids(processor, sample.text, sample.images)
    # Token by token: -100 up to and including "<|im_start|>assistant\n", then the answer and
    # <|im_end|>, then -100 for the final newline.
    answer = record["messages"][-1]["content"]
    expected_answer = tokenizer(answer + "<|im_end|>", add_special_tokens=False)["input_ids"]
    start = len(sample.input_ids) - len(expected_answer) - 1
    expected = [IGNORE] * start + expected_answer + [IGNORE]
    assert sample.labels == expected
    assert tokenizer.decode([t for t in sample.labels if t != IGNORE]) == answer + "<|im_end|>"
    image_id = processor.image_token_id
    n_image = sample.input_ids.count(image_id)
    assert n_image == 36  # a 224x224 picture with the tiny processors
    assert all(label == IGNORE for token, label in zip(sample.input_ids, sample.labels) if token == image_id)


def test_every_assistant_turn_is_learned_and_nothing_else(loaded_tiny, sample_dataset):
    processor = loaded_tiny().processor
    tokenizer = processor.tokenizer
    image = str(sample_dataset / "images" / "0002.png")
    messages = [
        {"role": "system", "content": "You are a careful assistant."},
        {"role": "user", "content": "<image>What chart is this?"},
        {"role": "assistant", "content": "A bar chart."},
        {"role": "user", "content": "How many bars?"},
        {"role": "assistant", "content": "Three green bars."},
    ]
    sample = encode_sample(processor, "multi", messages, [image])
    assert sample.input_ids == processor_ids(processor, sample.text, sample.images)
    learned = [t for t in sample.labels if t != IGNORE]
    expected = tokenizer("A bar chart.<|im_end|>", add_special_tokens=False)["input_ids"]
    expected += tokenizer("Three green bars.<|im_end|>", add_special_tokens=False)["input_ids"]
    assert learned == expected
    # Nothing of the system prompt or the questions is learned.
    for text in ("careful", "chart is", "How many"):
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert not any(learned[i : i + len(piece)] == piece for i in range(len(learned)))


def test_overlong_samples_are_dropped_with_a_count_or_refused_with_a_sentence(loaded_tiny, sample_dataset):
    processor = loaded_tiny().processor
    kept_all = build_data(TrainConfig(dataset=str(sample_dataset), val_ratio=0.0), processor, log=lambda _: None)
    lengths = sorted(s.length for s in kept_all.train)
    limit = lengths[len(lengths) // 2]
    lines = []
    data = build_data(TrainConfig(dataset=str(sample_dataset), val_ratio=0.0, max_length=limit), processor, lines.append)
    too_long = sum(n > limit for n in lengths)
    assert len(data.train) == 60 - too_long and too_long > 0
    assert all(s.length <= limit for s in data.train)
    assert f"left out {too_long} (overlong)" in lines[0]
    with pytest.raises(ConfigError) as err:
        build_data(TrainConfig(dataset=str(sample_dataset), val_ratio=0.0, max_length=limit, overlong="error"),
                   processor, lambda _: None)  # fmt: skip
    message = str(err.value)
    assert "max_length is" in message and "needs" in message and "tokens" in message
    needed = int(message.split("needs ")[1].split(" ")[0])
    assert needed > limit and needed in lengths


def test_identity_samples_and_system_prompt(loaded_tiny, sample_dataset):
    processor = loaded_tiny().processor
    cfg = TrainConfig(dataset=str(sample_dataset), val_ratio=0.0, identity=True, system="Be brief.",
                      model_name=["小明", "Xiao Ming"], model_author=["课堂", "Classroom"])  # fmt: skip
    data = build_data(cfg, processor, lambda _: None)
    identity = [s for s in data.train if s.key.startswith("identity-")]
    assert len(identity) == 16 and not any(s.images for s in identity)
    assert any("小明" in s.text for s in identity) and any("Xiao Ming" in s.text for s in identity)
    assert all("Be brief." in s.text for s in data.train)


def test_collator_pads_right_and_the_loss_positions_match_the_labels(loaded_tiny, sample_dataset):
    import torch

    processor = loaded_tiny().processor
    data = build_data(TrainConfig(dataset=str(sample_dataset), val_ratio=0.0), processor, lambda _: None)
    samples = sorted(data.train, key=lambda s: s.length)
    dataset = TrainDataset([samples[0], samples[-1]], processor)
    items = [dataset[0], dataset[1]]
    batch = LossCollator(processor.tokenizer.pad_token_id, pad_to_multiple_of=8)(items)
    width = batch["input_ids"].shape[1]
    assert width % 8 == 0 and width >= samples[-1].length
    short = samples[0].length
    assert (batch["input_ids"][0, short:] == processor.tokenizer.pad_token_id).all()
    assert (batch["attention_mask"][0, short:] == 0).all() and (batch["labels"][0, short:] == IGNORE).all()
    assert batch["pixel_values"].shape[0] == items[0]["pixel_values"].shape[0] + items[1]["pixel_values"].shape[0]
    assert batch["image_grid_thw"].shape == (2, 3)
    # The targets the lean loss uses are exactly the learned next tokens, in order.
    shifted = batch["labels"][:, 1:]
    assert torch.equal(batch["loss_targets"], shifted[shifted != IGNORE])
    plain = Collator(processor.tokenizer.pad_token_id)(items)
    assert plain["input_ids"].shape[1] == samples[-1].length


def test_lean_loss_equals_the_models_own_loss(loaded_tiny, sample_dataset, tmp_path):
    import torch

    from lab.training.metrics import Throughput
    from lab.training.trainer import make_trainer, training_arguments

    loaded = loaded_tiny()
    processor = loaded.processor
    data = build_data(TrainConfig(dataset=str(sample_dataset), val_ratio=0.0), processor, lambda _: None)
    items = [TrainDataset(data.train, processor)[i] for i in range(3)]
    batch = LossCollator(processor.tokenizer.pad_token_id)(items)
    cfg = TrainConfig(dataset=str(sample_dataset))
    args = training_arguments(cfg, str(tmp_path), "cpu", torch.float32, has_val=False)
    trainer = make_trainer(loaded.model, args, None, None, None, None, Throughput(), [])
    with torch.no_grad():
        reference = loaded.model(**{k: v for k, v in batch.items() if not k.startswith("loss_")}).loss
        ours = trainer.compute_loss(loaded.model, dict(batch))
    assert torch.allclose(ours, reference, rtol=1e-5), (ours, reference)


@pytest.mark.parametrize("family", FAMILIES)
def test_grouped_vision_attention_matches_the_stock_path(loaded_tiny, sample_dataset, family):
    import torch

    from lab.images import open_image
    from lab.training.speed import use_grouped_vision_attention

    loaded = loaded_tiny(family)
    pad = "<|vision_start|><|image_pad|><|vision_end|>"
    # Different sizes, so that pieces of different lengths share a batch.
    images = [open_image(sample_dataset / "images" / "0001.png"), open_image(sample_dataset / "images" / "0005.png"),
              open_image(sample_dataset / "images" / "0003.png").resize((300, 180))]  # fmt: skip
    inputs = loaded.processor(text=[pad * 3 + "Describe."], images=images, return_tensors="pt")
    with torch.no_grad():
        reference = loaded.model(**inputs).logits
        restore = use_grouped_vision_attention(loaded.model)
        try:
            grouped = loaded.model(**inputs).logits
        finally:
            restore()
    assert torch.allclose(grouped, reference, atol=1e-5)
