"""Training data: label masking token by token, image-token expansion, overlong samples, batching, the loss."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import FAMILIES

from lab.errors import ConfigError
from lab.families import FAMILIES as FAMILY_TABLE
from lab.train_config import TrainConfig
from lab.training.collator import Collator, LossCollator, RopeIndex, TrainDataset
from lab.training.data import build_data
from lab.training.encode import IGNORE, encode_sample

# The Qwen-style families: M-RoPE positions, and vision towers that run every picture as one packed sequence.
QWEN_STYLE = [f for f in FAMILIES if FAMILY_TABLE[f].pixels == "qwen"]


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

    out = processor(
        text=[text], images=[open_image(p) for p in images] or None, return_tensors="pt", add_special_tokens=False
    )
    return out["input_ids"][0].tolist()


@pytest.mark.parametrize("family", FAMILIES)
def test_labels_cover_the_answer_and_its_end_token_only(loaded_tiny, sample_dataset, family):
    loaded = loaded_tiny(family)
    processor, tokenizer = loaded.processor, loaded.processor.tokenizer
    end = FAMILY_TABLE[family].tokens.stop[0]  # what closes a turn: <|im_end|>, <end_of_turn>, <end_of_utterance>
    record = first_record(sample_dataset)
    sample = encode_sample(processor, record["id"], record["messages"], record["images"], family=family)

    # The ids are exactly what the processor makes of the text and the picture.
    assert sample.input_ids == processor_ids(processor, sample.text, sample.images)
    # Token by token: -100 up to the answer, then the answer and the end of its turn, then -100
    # for what follows (a new line).
    learned = [i for i, label in enumerate(sample.labels) if label != IGNORE]
    assert learned == list(range(learned[0], learned[-1] + 1))
    assert [sample.labels[i] for i in learned] == [sample.input_ids[i] for i in learned]
    answer = record["messages"][-1]["content"]
    assert tokenizer.decode([sample.input_ids[i] for i in learned]).lstrip() == answer + end
    assert tokenizer.decode(sample.input_ids[learned[-1] + 1 :]).strip() == ""
    assert sample.input_ids[learned[-1]] == tokenizer.convert_tokens_to_ids(end)
    image_id = loaded.model.config.image_token_id
    n_image = sample.input_ids.count(image_id)
    assert 16 <= n_image <= 100  # a 224x224 picture with the tiny processors
    assert all(label == IGNORE for token, label in zip(sample.input_ids, sample.labels) if token == image_id)
    assert tokenizer.decode(sample.input_ids[: learned[0]]).count(answer) == 0


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
    data = build_data(
        TrainConfig(dataset=str(sample_dataset), val_ratio=0.0, max_length=limit), processor, lines.append
    )
    too_long = sum(n > limit for n in lengths)
    assert len(data.train) == 60 - too_long and too_long > 0
    assert all(s.length <= limit for s in data.train)
    assert f"left out {too_long} (overlong)" in lines[0]
    with pytest.raises(ConfigError) as err:
        build_data(
            TrainConfig(dataset=str(sample_dataset), val_ratio=0.0, max_length=limit, overlong="error"),
            processor,
            lambda _: None,
        )
    message = str(err.value)
    assert "max_length is" in message and "needs" in message and "tokens" in message
    needed = int(message.split("needs ")[1].split(" ")[0])
    assert needed > limit and needed in lengths


def test_identity_samples_and_system_prompt(loaded_tiny, sample_dataset):
    processor = loaded_tiny().processor
    cfg = TrainConfig(
        dataset=str(sample_dataset),
        val_ratio=0.0,
        identity=True,
        system="Be brief.",
        model_name=["小明", "Xiao Ming"],
        model_author=["课堂", "Classroom"],
    )
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
    batch = LossCollator(processor.tokenizer.pad_token_id, rope=RopeIndex.of(loaded.model))(items)
    assert "position_ids" in batch  # computed here, not by the model
    cfg = TrainConfig(dataset=str(sample_dataset))
    args = training_arguments(cfg, str(tmp_path), "cpu", torch.float32, has_val=False)
    trainer = make_trainer(loaded.model, args, None, None, None, None, Throughput(), [])
    with torch.no_grad():
        stock = {k: v for k, v in batch.items() if not k.startswith("loss_") and k != "position_ids"}
        reference = loaded.model(**stock).loss
        seen = []
        head = loaded.model.get_output_embeddings()
        spy = head.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
        ours = trainer.compute_loss(loaded.model, dict(batch))
        spy.remove()
    assert torch.allclose(ours, reference, rtol=1e-5), (ours, reference)
    # The output layer computed logits for the learned tokens only, not for every sample at their positions.
    assert seen == [torch.Size([batch["loss_targets"].numel(), head.in_features])]
    assert batch["loss_targets"].numel() < len(items) * batch["loss_positions"].numel()


def _counting(loaded_tiny, sample_dataset, tmp_path):
    """(a trainer, two batches, the count of learned tokens in their labels)."""
    import torch

    from lab.training.metrics import Throughput
    from lab.training.trainer import make_trainer, training_arguments

    loaded = loaded_tiny()
    processor = loaded.processor
    data = build_data(TrainConfig(dataset=str(sample_dataset), val_ratio=0.0), processor, lambda _: None)
    items = [TrainDataset(data.train, processor)[i] for i in range(4)]
    collate = LossCollator(processor.tokenizer.pad_token_id)
    batches = [collate(items[:2]), collate(items[2:])]
    args = training_arguments(TrainConfig(dataset=str(sample_dataset)), str(tmp_path), "cpu", torch.float32, False)
    trainer = make_trainer(loaded.model, args, None, None, None, None, Throughput(), [])
    expected = sum(int((batch["labels"][:, 1:] != IGNORE).sum()) for batch in batches)
    return trainer, batches, expected


def test_the_loss_is_divided_by_the_learned_tokens_of_the_accumulated_batches(loaded_tiny, sample_dataset, tmp_path):
    import torch

    trainer, batches, expected = _counting(loaded_tiny, sample_dataset, tmp_path)
    assert int(trainer._get_num_items_in_batch(batches, torch.device("cpu"))) == expected > 0


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_the_learned_tokens_reach_the_gpu_without_waiting_for_it(loaded_tiny, sample_dataset, tmp_path):
    import torch

    trainer, batches, expected = _counting(loaded_tiny, sample_dataset, tmp_path)
    torch.cuda.set_sync_debug_mode("error")  # a copy that waits for the GPU raises
    try:
        count = trainer._get_num_items_in_batch(batches, torch.device("cuda"))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert count.device.type == "cuda" and int(count) == expected > 0


@pytest.mark.parametrize("family", QWEN_STYLE)
def test_positions_from_the_data_loader_equal_the_models_own(loaded_tiny, sample_dataset, family):
    import torch

    loaded = loaded_tiny(family)
    processor = loaded.processor
    cfg = TrainConfig(
        dataset=str(sample_dataset), val_ratio=0.0, identity=True, model_name=["A", "B"], model_author=["C", "D"]
    )
    data = build_data(cfg, processor, lambda _: None, family=family)
    samples = sorted(data.train, key=lambda s: s.length)  # the shortest is a text-only identity sample
    assert not samples[0].images and samples[-1].images
    dataset = TrainDataset([samples[0], samples[len(samples) // 2], samples[-1]], processor)
    rope = RopeIndex.of(loaded.model)
    batch = LossCollator(processor.tokenizer.pad_token_id, 8, rope)([dataset[i] for i in range(3)])
    inputs = {k: v for k, v in batch.items() if not k.startswith("loss_") and k != "labels"}
    expected, _ = loaded.model.model.get_rope_index(
        inputs["input_ids"],
        mm_token_type_ids=inputs["mm_token_type_ids"],
        image_grid_thw=inputs["image_grid_thw"],
        attention_mask=inputs["attention_mask"],
    )
    assert torch.equal(batch["position_ids"], expected)
    with torch.no_grad():
        ours = loaded.model(**inputs).logits
        stock = loaded.model(**{k: v for k, v in inputs.items() if k != "position_ids"}).logits
    assert torch.equal(ours, stock)
    # Without pictures the model computes no 3-D positions, and neither does the collator.
    text_only = LossCollator(processor.tokenizer.pad_token_id, 8, rope)([dataset[0]])
    assert "position_ids" not in text_only


@pytest.mark.parametrize("targets", [["language"], ["language", "merger"]])
def test_a_frozen_vision_tower_runs_without_autograd_and_gradients_stay_the_same(tiny_models, targets):
    import torch

    from lab.models import load_model
    from lab.training.setup import prepare_model
    from lab.training.speed import frozen_towers_without_grad, vision_tower

    loaded = load_model(str(tiny_models("qwen2_5_vl")))
    cfg = TrainConfig(dataset="data/sample", lora_targets=targets, lora_dropout=0.0)
    data = build_data(cfg, loaded.processor, lambda _: None)
    model = prepare_model(loaded.model, cfg).model
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    dataset = TrainDataset(data.train[:3], loaded.processor)
    batch = LossCollator(loaded.processor.tokenizer.pad_token_id)([dataset[i] for i in range(3)])
    inputs = {k: v for k, v in batch.items() if not k.startswith("loss_")}
    tower = vision_tower(model)
    seen = []
    tower.register_forward_hook(lambda module, args, out: seen.append(out.pooler_output.requires_grad))

    def step(switch: bool):
        model.zero_grad(set_to_none=True)
        restore = frozen_towers_without_grad(model) if switch else (lambda: None)
        try:
            model(**inputs).loss.backward()
        finally:
            restore()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    stock, switched = step(False), step(True)
    frozen = targets == ["language"]
    # Stock transformers differentiates through the frozen tower (its input embeddings are
    # hooked to require grad); the switch stops that, and only for a tower that is frozen.
    assert seen == [True, not frozen]
    assert stock.keys() == switched.keys() and all(torch.equal(stock[n], switched[n]) for n in stock)
    assert "forward" not in vars(tower)  # undone


@pytest.mark.parametrize("family", QWEN_STYLE)
@pytest.mark.parametrize("mixed_sizes", [True, False])
def test_grouped_vision_attention_matches_the_stock_path(loaded_tiny, sample_dataset, family, mixed_sizes):
    import torch

    from lab.images import open_image
    from lab.training.speed import use_grouped_vision_attention

    loaded = loaded_tiny(family)
    pad = "<|vision_start|><|image_pad|><|vision_end|>"
    # Different sizes make pieces of different lengths share a batch; equal sizes take the fast path.
    images = [
        open_image(sample_dataset / "images" / "0001.png"),
        open_image(sample_dataset / "images" / "0005.png"),
        open_image(sample_dataset / "images" / "0003.png"),
    ]
    if mixed_sizes:
        images[2] = images[2].resize((300, 180))
    inputs = loaded.processor(text=[pad * 3 + "Describe."], images=images, return_tensors="pt")
    with torch.no_grad():
        reference = loaded.model(**inputs).logits
        restore = use_grouped_vision_attention(loaded.model)
        try:
            grouped = loaded.model(**inputs).logits
        finally:
            restore()
    assert torch.allclose(grouped, reference, atol=1e-5)


def test_grouped_attention_of_equal_pieces_reads_nothing_back_from_the_device():
    import torch
    import torch.nn.functional as F

    from lab.training.speed import grouped_sdpa

    q, k, v = (torch.randn(1, 2, 12, 4) for _ in range(3))
    # Boundaries on the meta device have no values: reading them would fail.
    bounds = torch.empty(4, dtype=torch.int32, device="meta")
    out, _ = grouped_sdpa(None, q, k, v, cu_seq_lens_q=bounds, max_length_q=4)
    pieces = [F.scaled_dot_product_attention(*(t[:, :, i : i + 4] for t in (q, k, v))) for i in (0, 4, 8)]
    assert torch.allclose(out, torch.cat(pieces, dim=2).transpose(1, 2), atol=1e-6)


def test_batches_are_padded_coarser_only_while_layers_are_compiled():
    import torch

    from lab.training.speed import COMPILED_PAD_MULTIPLE, pad_for_compiled_blocks

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    collator = Collator(pad_token_id=0, pad_to_multiple_of=8)
    pad_for_compiled_blocks(model, collator)()
    assert collator.pad_to_multiple_of == 8
    model[1].compile()  # compiles lazily, at the first call
    restore = pad_for_compiled_blocks(model, collator)
    assert collator.pad_to_multiple_of == COMPILED_PAD_MULTIPLE
    items = [{"input_ids": torch.ones(70, dtype=torch.long)}, {"input_ids": torch.ones(3, dtype=torch.long)}]
    assert collator(items)["input_ids"].shape == (2, 128)
    restore()
    assert collator.pad_to_multiple_of == 8


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on the CPU needs a C++ compiler"
)
def test_the_ready_causal_mask_gives_the_logits_and_gradients_of_the_padding_mask(tiny_models):
    """The training step hands a Qwen-VL language model the 4-D mask transformers would build from
    the 2-D padding mask (without reading the padding back from the GPU): the same numbers. A batch
    without padding goes without a mask: the same numbers again."""
    import torch

    from lab.models import load_model
    from lab.training.collator import RopeIndex
    from lab.training.setup import prepare_model
    from lab.training.speed import ready_causal_mask, takes_ready_causal_mask

    assert not takes_ready_causal_mask(load_model(str(tiny_models("gemma3"))).model)
    loaded = load_model(str(tiny_models("qwen2_5_vl")), dtype="float32")
    cfg = TrainConfig(dataset="data/sample", lora_targets=["language"], lora_dropout=0.0)
    data = build_data(cfg, loaded.processor, lambda _: None)
    model = prepare_model(loaded.model, cfg).model
    assert takes_ready_causal_mask(model)
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # zero at the start, which would leave the A matrices without gradients
            param.data.normal_(0, 0.05)
    dataset = TrainDataset(data.train[:3], loaded.processor)
    batch = LossCollator(loaded.processor.tokenizer.pad_token_id, rope=RopeIndex.of(model))(
        [dataset[i] for i in range(3)]
    )
    inputs = {k: v for k, v in batch.items() if not k.startswith("loss_")}
    assert not inputs["attention_mask"].all()  # the batch has padding

    def run(mask):
        model.zero_grad(set_to_none=True)
        out = model(**{**inputs, "attention_mask": mask})
        out.loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])
        return out.logits, grads

    logits, grads = run(inputs["attention_mask"])
    ready_logits, ready_grads = run(ready_causal_mask(inputs["attention_mask"]))
    real = inputs["attention_mask"].bool()
    assert torch.allclose(ready_logits[real], logits[real], atol=1e-6, rtol=0)
    assert torch.allclose(ready_grads, grads, atol=1e-7, rtol=1e-5)

    # A batch without padding comes without a mask (SDPA's causal kernel); a padded one keeps its mask.
    collate = LossCollator(loaded.processor.tokenizer.pad_token_id, rope=RopeIndex.of(model))
    collate.unpadded_without_mask = True
    assert "attention_mask" in collate([dataset[i] for i in range(3)])
    alone = collate([dataset[0]])
    assert "attention_mask" not in alone
    inputs = {k: v for k, v in alone.items() if not k.startswith("loss_")}
    ones = torch.ones_like(inputs["input_ids"])
    without, _ = run(None)
    with_ones, _ = run(ones)
    assert torch.allclose(without, with_ones, atol=1e-6, rtol=0)


def test_compiled_layers_give_the_eager_gradients_under_dropout_and_checkpointing(tiny_models):
    """A checkpointed layer recomputes its forward pass in the backward one; compiled, it must
    draw the same dropout masks again, or its gradients are not those of its loss."""
    import torch
    import torch._dynamo

    from lab.models import load_model
    from lab.training.setup import prepare_model
    from lab.training.speed import compile_blocks

    loaded = load_model(str(tiny_models("qwen2_5_vl")), dtype="float32")
    cfg = TrainConfig(dataset="data/sample", lora_targets=["language"], lora_dropout=0.3)
    data = build_data(cfg, loaded.processor, lambda _: None)
    model = prepare_model(loaded.model, cfg).model
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # zero at the start, which would leave the A matrices without gradients
            param.data.normal_(0, 0.05)
    dataset = TrainDataset(data.train[:2], loaded.processor)
    batch = LossCollator(loaded.processor.tokenizer.pad_token_id)([dataset[0], dataset[1]])
    inputs = {k: v for k, v in batch.items() if not k.startswith("loss_")}

    def gradients():
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        model(**inputs).loss.backward()
        return torch.cat([p.grad.flatten() for p in model.parameters() if p.requires_grad])

    eager = gradients()
    restore = compile_blocks(model)
    suppress = torch._dynamo.config.suppress_errors
    torch._dynamo.config.suppress_errors = False  # a layer that failed to compile would make this test vacuous
    try:
        compiled = gradients()
    finally:
        torch._dynamo.config.suppress_errors = suppress
        restore()
    assert (compiled - eager).norm() <= 1e-4 * eager.norm()


@pytest.mark.slow
@pytest.mark.skipif(
    not (shutil.which("c++") or shutil.which("g++")), reason="torch.compile on the CPU needs a C++ compiler"
)
@pytest.mark.parametrize("targets", [["language"], ["language", "merger"]])
def test_a_frozen_vision_tower_is_compiled_and_gives_the_eager_features(tiny_models, targets):
    """compile_blocks compiles the vision blocks only where the tower runs without autograd (no weight of it
    trains), and the compiled tower's features are the eager ones."""
    import torch
    import torch._dynamo

    from lab.models import load_model
    from lab.training.setup import prepare_model
    from lab.training.speed import compile_blocks, frozen_towers_without_grad, vision_tower

    loaded = load_model(str(tiny_models("qwen2_5_vl")), dtype="float32")
    cfg = TrainConfig(dataset="data/sample", lora_targets=targets)
    data = build_data(cfg, loaded.processor, lambda _: None)
    model = prepare_model(loaded.model, cfg).model
    dataset = TrainDataset(data.train[:3], loaded.processor)
    batch = LossCollator(loaded.processor.tokenizer.pad_token_id)([dataset[i] for i in range(3)])
    tower = vision_tower(model)

    def features():
        with torch.no_grad():
            return tower(batch["pixel_values"], grid_thw=batch["image_grid_thw"]).pooler_output

    eager = features()
    suppress = torch._dynamo.config.suppress_errors
    restore = compile_blocks(model)
    undo_grad = frozen_towers_without_grad(model)
    torch._dynamo.config.suppress_errors = False  # a block that failed to compile would make this test vacuous
    try:
        compiled_blocks = [b for b in tower.blocks if b._compiled_call_impl is not None]
        compiled = features()
    finally:
        torch._dynamo.config.suppress_errors = suppress
        undo_grad()
        restore()
    frozen = targets == ["language"]
    assert len(compiled_blocks) == (len(tower.blocks) if frozen else 0)
    assert torch.allclose(compiled, eager, atol=1e-5, rtol=1e-4)
    assert all(b._compiled_call_impl is None for b in tower.blocks)  # undone


def test_one_process_on_a_multi_gpu_machine_never_uses_data_parallel(monkeypatch, tmp_path):
    """nn.DataParallel replicas hold no parameters, and Qwen-VL reads its vision dtype from them."""
    import torch
    from transformers import TrainingArguments

    from lab.train_config import TrainConfig
    from lab.training.trainer import training_arguments

    # As on a host with two GPUs and no distributed launch: the Trainer would see n_gpu == 2.
    monkeypatch.setattr(TrainingArguments, "n_gpu", property(lambda self: 1 if self.__dict__.get("_n_gpu") == 1 else 2))
    cfg = TrainConfig.from_preset("cpu_demo")
    args = training_arguments(cfg, str(tmp_path), "cpu", torch.float32, has_val=False)
    assert args.n_gpu == 1
