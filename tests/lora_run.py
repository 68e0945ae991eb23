"""A real LoRA run folder for the evaluation, chat and export tests, trained in seconds.

Plain PEFT + a hand-written loop on the tiny model (answer tokens only in the loss), so
these tests do not depend on the training code. The run folder follows the run-folder
contract: ``config.yaml``, the adapter (in the sub-folder PEFT makes for a named
adapter) and the processor files. Trained once per test session and cached.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.conversation import split_prompt, to_hf_messages
from lab.dataset import load_records
from lab.images import open_image

_CACHE: dict[tuple, Path] = {}


def sample_records(dataset: Path, n: int) -> list[dict]:
    return load_records(dataset, absolute_images=True)[:n]


def _batch(processor, records: list[dict]):
    """The records as one right-padded batch, the prompt part of each labelled -100 (any family's template)."""
    import torch

    prompts, fulls, images = [], [], []
    for record in records:
        messages, _ = split_prompt(record["messages"])
        prompt = processor.apply_chat_template(to_hf_messages(messages), tokenize=False, add_generation_prompt=True)
        prompts.append(prompt)
        fulls.append(processor.apply_chat_template(to_hf_messages(record["messages"]), tokenize=False))
        images.append([open_image(p) for p in record["images"]])
    inputs = processor(
        text=fulls, images=images, return_tensors="pt", padding=True, padding_side="right", add_special_tokens=False
    )
    prompt_lens = [
        len(processor(text=[p], images=[im], return_tensors="pt", add_special_tokens=False)["input_ids"][0])
        for p, im in zip(prompts, images)
    ]
    labels = inputs["input_ids"].clone()
    labels[inputs["attention_mask"] == 0] = -100
    for row, n in enumerate(prompt_lens):
        labels[row, :n] = -100
    return {**inputs, "labels": labels}, torch


def train_lora_run(model_dir: Path, run_dir: Path, dataset: Path, *, samples: int = 8, steps: int = 120) -> Path:
    """Overfit a LoRA adapter on the first ``samples`` records of ``dataset``; returns the run folder."""
    key = (str(model_dir), str(run_dir), str(dataset), samples, steps)
    if key in _CACHE:
        return _CACHE[key]
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from lab.model_parts import lora_target_modules
    from lab.train_config import TrainConfig
    from lab.training.runs import peft_adapter_name

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32)
    processor = AutoProcessor.from_pretrained(model_dir)
    name = run_dir.name
    # The output layer is trained in full too: behind the frozen random embeddings of a tiny
    # model, LoRA alone needs hundreds of steps before any word comes out right. It also
    # unties lm_head from the embeddings, which the export has to keep apart.
    config = LoraConfig(
        r=16,
        lora_alpha=32,
        lora_dropout=0.0,
        target_modules=lora_target_modules(model, {"language"}),
        modules_to_save=["lm_head"],
    )
    model = get_peft_model(model, config, adapter_name=peft_adapter_name(name))
    # 1e-2 stalls at the answers' word frequencies behind the real vocabulary's output layer.
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    batch, _ = _batch(processor, sample_records(dataset, samples))
    labels = batch.pop("labels")[:, 1:]
    answer = labels != -100
    output_layer = model.get_output_embeddings()
    model.train()
    for _ in range(steps):
        # Logits only of the answer tokens: the output layer has the real vocabulary's 150k+ rows. (The last
        # hidden state is what the output layer reads, in every family of the table.)
        hidden = model(**batch, logits_to_keep=1, output_hidden_states=True).hidden_states[-1]
        loss = torch.nn.functional.cross_entropy(output_layer(hidden[:, :-1][answer]), labels[answer])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(run_dir)
    processor.save_pretrained(run_dir)
    TrainConfig(
        model=str(model_dir),
        dataset=str(dataset),
        run_name=name,
        output_dir=str(run_dir.parent),
        lora_rank=16,
        lora_alpha=32,
        val_ratio=0.2,
        max_pixels=None,
    ).to_yaml(run_dir / "config.yaml")
    run_dir.joinpath("final_loss.txt").write_text(f"{loss.item():.4f}\n")
    _CACHE[key] = run_dir
    return run_dir


@pytest.fixture(scope="session")
def lora_run_dir(tiny_models, tmp_path_factory) -> Path:
    """A trained LoRA run folder of the tiny Qwen2.5-VL model (shared by every test file of the session)."""
    from lab.paths import SAMPLE_DATASET

    run_dir = tmp_path_factory.getbasetemp() / "lora_runs" / "sample-lora"
    return train_lora_run(tiny_models("qwen2_5_vl"), run_dir, SAMPLE_DATASET)


@pytest.fixture(scope="session")
def family_run(tiny_models, tmp_path_factory):
    """``family_run(family) -> Path``: a LoRA run folder of ``family``'s tiny model, a short overfit of 4 samples
    (enough for its answers to differ from the base model's)."""
    from lab.paths import SAMPLE_DATASET

    def get(family: str) -> Path:
        run_dir = tmp_path_factory.getbasetemp() / "lora_runs" / f"{family}-lora"
        return train_lora_run(tiny_models(family), run_dir, SAMPLE_DATASET, samples=4, steps=40)

    return get
