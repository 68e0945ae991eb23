"""The memory and time forecast, the automatic batch size and checkpointing, and ``train --dry-run``."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from PIL import Image

from lab.errors import ConfigError
from lab.train_config import TrainConfig
from lab.training import fit
from lab.training.fit import Where, plan, resolve_auto
from lab.training.forecast import (
    CARDS,
    Arch,
    Card,
    Job,
    activation_bytes,
    fits,
    forecast,
    lora_params,
    part_params,
    trainable_bytes,
    weight_bytes,
)
from lab.training.sizes import KNOWN_CONFIGS, arch_of, dataset_lengths

REPO = Path(__file__).resolve().parent.parent
TINY = Arch(
    "qwen2_5_vl",
    hidden=4,
    intermediate=8,
    layers=2,
    heads=2,
    kv_heads=1,
    head_dim=2,
    vocab=10,
    tied=True,
    vision_hidden=2,
    vision_intermediate=4,
    vision_depth=1,
    vision_swiglu=True,
    patch=2,
    merge=2,
    vision_out=4,
)
# bench/train.py's samples: one 448x448 image (256 tokens) and ~170 text tokens, answers of 80-120 tokens.
BENCH = dict(mean_tokens=426, max_tokens=446, mean_answer=101, max_answer=121, image_share=256 / 426)


def test_bytes_of_a_tiny_architecture_counted_by_hand():
    # A decoder layer: q and o 4x4 each, k and v 4x2 each, MLP 3 x 4x8 -> 144 weights; 2 layers and tied
    # embeddings 10x4 -> 328. Vision: one block 4x2x2 + 3x2x4 = 40, patch embedding 3x2x(2x2)x2 = 48.
    # Merger: (2x4)^2 + 8x4 = 96.
    assert part_params(TINY) == {"language": 328, "vision": 88, "merger": 96}
    job = Job(method="lora", lora_rank=1, dtype_bytes=2, batch=2, max_tokens=3, max_answer=1, checkpointing=True)
    assert weight_bytes(TINY, job) == (328 + 88 + 96) * 2
    # LoRA rank 1: per layer (4+4)x2 + (4+2)x2 + 3x(4+8) = 64, two layers; float32 weight, gradient, m, v.
    assert lora_params(TINY, 1, ["language"]) == 128
    assert trainable_bytes(TINY, job) == 128 * 16
    # 6 tokens; each keeps 2 layer inputs of 4 bf16 values, plus one layer recomputed: 18x4 + 5x8 + 4x2 values.
    activations, logits = activation_bytes(TINY, job)
    assert activations == 6 * (2 * 4 * 2 + (72 + 40 + 8) * 2)
    assert logits == 2 * 1 * 10 * (2 * 2 + 8)  # bf16 logits and rows picked, float32 copy and log-softmax
    assert activation_bytes(TINY, replace(job, checkpointing=False))[0] == 6 * 2 * (72 + 40 + 8) * 2
    full = replace(job, method="full", full_parts=("language",))
    assert trainable_bytes(TINY, full) == 328 * 2 * 3  # gradient, m and v in the weights' dtype


def test_memory_grows_with_the_batch_and_shrinks_with_checkpointing_and_quantization():
    arch = arch_of(KNOWN_CONFIGS["Qwen/Qwen2.5-VL-3B-Instruct"])
    job = Job(**BENCH, batch=4)
    peaks = [forecast(arch, replace(job, batch=b)).allocated_gib for b in (1, 2, 4, 8, 16)]
    assert peaks == sorted(peaks) and len(set(peaks)) == 5
    on, off = (activation_bytes(arch, replace(job, checkpointing=c))[0] for c in (True, False))
    assert on < off / 5
    qlora, lora = (forecast(arch, replace(job, method=m)).allocated_gib for m in ("qlora", "lora"))
    full = forecast(arch, replace(job, method="full", full_parts=("language", "merger"))).allocated_gib
    assert qlora < lora < full


def test_known_configs_are_the_benchmark_architectures():
    sys.path.insert(0, str(REPO))
    from bench.train import SIZES

    for size, hub_id in (("3b", "Qwen/Qwen2.5-VL-3B-Instruct"), ("7b", "Qwen/Qwen2.5-VL-7B-Instruct")):
        known = KNOWN_CONFIGS[hub_id]
        assert {k: known["text_config"][k] for k in SIZES[size]["text"]} == SIZES[size]["text"]
        assert known["tie_word_embeddings"] == SIZES[size]["tie"]
        assert known["vision_config"]["out_hidden_size"] == SIZES[size]["out_hidden"]


@pytest.mark.parametrize(
    "hub_id, method, batch, peak_gib, tokens_per_s",
    [
        ("Qwen/Qwen2.5-VL-3B-Instruct", "lora", 4, 8.4, 4560),
        ("Qwen/Qwen2.5-VL-3B-Instruct", "lora", 16, 11.8, 15472),
        ("Qwen/Qwen2.5-VL-7B-Instruct", "qlora", 4, 7.0, 1700),
        ("Qwen/Qwen2.5-VL-7B-Instruct", "qlora", 4, 7.35, 1700),
    ],
)
def test_forecast_lands_within_15_percent_of_the_measured_peaks(hub_id, method, batch, peak_gib, tokens_per_s):
    # The peaks and speeds recorded in BENCHMARKS.md (one H200, bench/train.py's setup).
    result = forecast(arch_of(KNOWN_CONFIGS[hub_id]), Job(method=method, batch=batch, **BENCH), CARDS["h200"])
    assert abs(result.allocated_gib - peak_gib) / peak_gib < 0.15, result.parts
    assert abs(result.tokens_per_s - tokens_per_s) / tokens_per_s < 0.15


@pytest.fixture
def bench_dataset(tmp_path) -> Path:
    """bench/train.py's kind of sample: a 448x448 picture and ~170 tokens of text."""
    folder = tmp_path / "bench"
    (folder / "images").mkdir(parents=True)
    Image.new("RGB", (448, 448), (10, 20, 30)).save(folder / "images" / "a.png")
    answer = " ".join(["shapes"] * 70)  # ~105 tokens at 4 characters a token
    record = {
        "images": ["images/a.png"],
        "messages": [
            {
                "role": "user",
                "content": "<image>Describe this picture in detail: the shapes, their colours, where they "
                "are and what the whole picture could be.",
            },
            {"role": "assistant", "content": answer},
        ],
    }
    (folder / "data.jsonl").write_text("\n".join(json.dumps(record) for _ in range(400)) + "\n")
    return folder


def test_dataset_lengths_count_image_tokens_from_the_image_size(bench_dataset):
    cfg = TrainConfig(
        model="Qwen/Qwen2.5-VL-3B-Instruct", dataset=str(bench_dataset), max_pixels=448 * 448, val_ratio=0.0
    )
    lengths = dataset_lengths(cfg, arch_of(KNOWN_CONFIGS[cfg.model]))
    assert lengths.samples == 400
    assert lengths.image_share == pytest.approx(258 / lengths.mean_tokens)  # 16x16 tokens and vision start/end
    assert 380 < lengths.mean_tokens < 460 and 90 < lengths.max_answer < 130


def _plan_on(card: Card, cfg: TrainConfig, monkeypatch):
    monkeypatch.setattr(fit, "this_machine", lambda device, card_name=None: Where(card, card.memory_gib))
    return plan(cfg, "cuda:0")


def test_auto_fits_a_small_and_a_large_card_differently_and_keeps_the_effective_batch(bench_dataset, monkeypatch):
    cfg = TrainConfig.from_preset(
        "lora",
        [f"dataset={bench_dataset}", "max_pixels=200704", "lora_targets=[language]", "gradient_accumulation_steps=16"],
    )
    assert (cfg.per_device_batch_size, cfg.gradient_checkpointing) == ("auto", "auto")
    small = _plan_on(Card("a 16 GiB card", 16.0, 100.0), cfg, monkeypatch)
    large = _plan_on(CARDS["h200"], cfg, monkeypatch)
    assert small.fits and large.fits
    assert (small.batch, small.checkpointing) != (large.batch, large.checkpointing)
    assert not large.checkpointing and large.batch == 16 and large.accumulation == 1  # all activations fit
    assert small.batch < 16 and small.batch * small.accumulation == 16  # batch x accumulation x GPUs as asked
    bigger = replace(small.result.job, batch=small.batch * 2)
    assert fits(small.result, 16.0) and not fits(forecast(small.arch, bigger), 16.0)


def test_auto_batch_without_keeping_the_effective_batch_takes_the_largest(bench_dataset, monkeypatch):
    cfg = TrainConfig.from_preset(
        "lora",
        [
            f"dataset={bench_dataset}",
            "max_pixels=200704",
            "auto_keeps_effective_batch=false",
            "gradient_accumulation_steps=2",
        ],
    )
    large = _plan_on(CARDS["h200"], cfg, monkeypatch)
    assert large.accumulation == 2 and large.batch >= 16  # not capped at 1 x 2
    bigger = fit.BATCHES[fit.BATCHES.index(large.batch) + 1]
    assert not fits(forecast(large.arch, replace(large.result.job, batch=bigger)), CARDS["h200"].memory_gib)


def test_a_job_that_does_not_fit_names_changes_that_would(bench_dataset, monkeypatch):
    cfg = TrainConfig.from_preset(
        "lora",
        [f"dataset={bench_dataset}", "max_pixels=200704", "per_device_batch_size=8", "gradient_checkpointing=false"],
    )
    found = _plan_on(Card("a 16 GiB card", 16.0, 100.0), cfg, monkeypatch)
    assert found.fits is False and found.fixes
    assert all(result.needed_gib <= 16.0 * 0.9 for _, result in found.fixes)
    assert "gradient_checkpointing: true" in [str(what) for what, _ in found.fixes]
    text = str(fit.report(found, cfg.model))
    assert "It does not fit; it would with" in text and "per_device_batch_size" in text


def test_cpu_resolves_auto_to_batch_1_with_checkpointing(bench_dataset):
    cfg = TrainConfig(dataset=str(bench_dataset))
    resolve_auto(cfg, "cpu")
    assert (cfg.per_device_batch_size, cfg.gradient_checkpointing, cfg.gradient_accumulation_steps) == (1, True, 16)


def test_run_config_holds_the_resolved_values(tiny_models, bench_dataset, monkeypatch):
    from lab.training import run_folder

    monkeypatch.setattr(run_folder, "training_device", lambda: "cuda:0")
    monkeypatch.setattr(fit, "this_machine", lambda device, card=None: Where(CARDS["h200"], 100.0))
    cfg = TrainConfig(
        model=str(tiny_models("qwen2_5_vl")),
        dataset=str(bench_dataset),
        max_pixels=200704,
        gradient_accumulation_steps=8,
        run_name="auto",
    )
    run_dir = run_folder.prepare_run_dir(cfg)
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert (saved["per_device_batch_size"], saved["gradient_checkpointing"]) == (8, False)
    assert saved["gradient_accumulation_steps"] == 1
    assert TrainConfig.from_dict(saved).per_device_batch_size == 8


@pytest.mark.parametrize("family", ["qwen3_5", "internvl", "gemma3"])
def test_a_family_whose_image_tokens_the_forecast_cannot_count_falls_back_on_a_gpu(
    family, tiny_models, sample_dataset, monkeypatch
):
    from lab.families import get_family

    monkeypatch.setattr(fit, "this_machine", lambda device, card=None: Where(CARDS["h200"], 100.0))
    cfg = TrainConfig(model=str(tiny_models(family)), dataset=str(sample_dataset), gradient_accumulation_steps=4)
    said = []
    chosen = resolve_auto(cfg, "cuda:0", said.append)
    if get_family(family).pixels == "qwen":
        assert chosen is not None and cfg.per_device_batch_size == chosen.batch > 1
    else:  # InternVL's tiles, Gemma 3's fixed count: a sentence, and the settings from before the forecast
        assert chosen is None and (cfg.per_device_batch_size, cfg.gradient_checkpointing) == (1, True)
        assert f"{family} models count them their own way" in said[0]
        with pytest.raises(ConfigError, match="cannot be forecast yet"):
            plan(cfg, "cuda", "h200")


def test_dry_run_loads_nothing_and_prints_the_forecast():
    code = (
        "import sys; from lab.cli import main; rc = main(['train', '--preset', 'lora', '--dry-run', '--card', "
        "'4090', '--json']); print(rc, sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert done.returncode == 0, done.stderr
    *body, last = done.stdout.strip().splitlines()
    assert last == "0 []"  # exit status 0, and neither torch nor transformers imported
    found = json.loads("\n".join(body))
    assert found["card"] == "NVIDIA GeForce RTX 4090" and found["fits"] is True
    assert found["chosen_automatically"] == ["per_device_batch_size", "gradient_checkpointing"]
    assert found["per_device_batch_size"] * found["gradient_accumulation_steps"] == 16
    assert 6.9 < found["memory_gib"]["weights"] < 7.1  # 3.75B parameters in bf16


def test_dry_run_in_chinese_and_an_unknown_card():
    env_zh = {"LAB_LANG": "zh"}
    for args, expected in (
        (["--card", "h200"], "预估"),
        (["--card", "H200"], "预估"),  # as the card's maker writes it
        (["--card", "h300"], "Unknown card h300"),
    ):
        done = subprocess.run(
            [sys.executable, "-m", "lab", "train", "--preset", "qlora", "--dry-run", *args],
            capture_output=True,
            text=True,
            cwd=REPO,
            timeout=120,
            env={**__import__("os").environ, **(env_zh if expected == "预估" else {})},
        )
        assert expected in done.stdout + done.stderr


def test_bench_script_runs_on_the_cpu_with_the_tiny_model(tmp_path):
    out = tmp_path / "forecast.json"
    done = subprocess.run(
        [
            sys.executable,
            "bench/forecast.py",
            "--tiny",
            "--steps",
            "3",
            "--out",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())["runs"]
    assert [r["run"] for r in rows] == ["tiny-lora-b2-ckpt", "tiny-lora-b2-nockpt", "tiny-full-b2-ckpt"]
    assert all("error" not in r and r["tokens_per_s"] > 0 and r["forecast_peak_gib"] > 0 for r in rows), rows
    assert "| run | batch | checkpointing | forecast GiB | measured GiB |" in done.stdout


def test_train_tab_forecasts_the_form_in_the_page_language():
    from lab.ui import train_tab

    values = {
        "model": "Qwen/Qwen2.5-VL-3B-Instruct",
        "dataset": "data/sample",
        "per_device_batch_size": "auto",
        "gradient_checkpointing": "auto",
    }
    text = train_tab.forecast(values, "h200", "zh")
    assert "NVIDIA H200" in text and "（自动选择）" in text and "放得下。" in text
    assert "Forecast for" in train_tab.forecast(values, train_tab.HERE, "en")  # this machine: the CPU here


def test_a_shared_deployment_forecasts_only_models_a_visitor_may_load(monkeypatch, tmp_path):
    from lab.errors import LabError
    from lab.training.sizes import read_model_config

    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "config.json").write_text("{}")
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    refusals = []
    for name in (str(tmp_path / "outside"), str(tmp_path / "missing"), "someone/not-allowed"):
        with pytest.raises(LabError) as err:
            read_model_config(name)
        refusals.append(str(err.value))
    assert refusals[0] == refusals[1] == refusals[2]  # whether the folder exists is not told
    assert refusals[0].startswith("On this shared server only these models can be loaded")
