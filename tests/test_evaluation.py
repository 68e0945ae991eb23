"""Batched evaluation: equal to one-at-a-time, base vs tuned, stop, busy, saved results, endpoints, CLI."""

import hashlib
import json
import shutil
import threading
from pathlib import Path

import pytest
import torch
from conftest import FAMILIES, families
from fake_openai import FakeOpenAI, answer, image_digest

from lab.errors import BusyError, ConfigError, LabError, localize
from lab.evaluation.endpoint import EndpointConfig, evaluate_endpoint
from lab.evaluation.report import metrics_table, sample_table, summary_line
from lab.evaluation.runner import (
    EvalSettings,
    list_results,
    load_result,
    run_evaluation,
    samples_from_dataset,
    samples_from_run,
)
from lab.generate import generate_batch
from lab.handle import ModelHandle, ModelState
from lab.images import open_image
from lab.labeling.client import encode_image
from lab.models import load_model


def _scrambled(folder, family="qwen2_5_vl"):
    """The tiny model with larger random weights: its greedy answers then depend on the input
    (the freshly built one answers every prompt with the same newline). Gemma 3 scales its
    embeddings up by the square root of their width and caps its logits: weights of 0.3 make
    every answer the same capped token there, so it gets smaller ones."""
    loaded = load_model(str(folder), device="cpu")
    generator = torch.Generator().manual_seed(0)
    scale = 0.02 if family == "gemma3" else 0.3
    with torch.no_grad():
        for param in loaded.model.parameters():
            if param.dim() > 1:
                param.copy_(torch.randn(param.shape, generator=generator) * scale)
    return loaded


def _prompts(sample_dataset):
    samples = samples_from_dataset(sample_dataset / "data_caption_zh.jsonl")[:4]
    conversations = [s.messages for s in samples]
    images = [[open_image(p) for p in s.images] for s in samples]
    # Different prompt lengths, so the batch really is padded, and one prompt with two images.
    conversations[1] = [{"role": "system", "content": "你是一个乐于助人的助手。" * 3}] + conversations[1]
    conversations[2] = [{"role": "user", "content": "<image><image>比较这两张图。"}]
    images[2] = images[2] + images[3]
    return conversations, images


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_greedy_equals_one_at_a_time(family, tiny_models, sample_dataset):
    loaded = _scrambled(tiny_models(family), family)
    conversations, images = _prompts(sample_dataset)
    batched = generate_batch(loaded, conversations, images, max_new_tokens=8)
    single = [generate_batch(loaded, [c], [i], max_new_tokens=8)[0] for c, i in zip(conversations, images)]
    assert [g.token_ids for g in batched] == [g.token_ids for g in single]
    assert len({tuple(g.token_ids) for g in batched}) > 1, "answers must differ, or the comparison proves nothing"
    assert all(g.completion_tokens == 8 and g.prompt_tokens > 0 for g in batched)


def _handle(run_dir):
    handle = ModelHandle()
    handle.load_run(run_dir)
    return handle


def test_tuned_is_ahead_of_base_and_results_are_saved(lora_run_dir, sample_dataset):
    handle = _handle(lora_run_dir)
    samples = samples_from_dataset(sample_dataset)[:8]  # the samples the adapter was trained on
    seen = []
    result = run_evaluation(
        handle,
        samples,
        EvalSettings(batch_size=4, max_new_tokens=12, compare_base=True, name="t"),
        source="data/sample",
        progress=lambda d, t, e: seen.append((d, t, e)),
    )
    assert result.variants == ["base", "tuned"]
    base, tuned = result.metrics["base"], result.metrics["tuned"]
    assert tuned["rouge_1"] > base["rouge_1"] and tuned["chrf"] > base["chrf"]
    assert [d for d, _, _ in seen] == [4, 8] and seen[-1][2] == 0 and seen[0][2] > 0
    # saved in the run folder: a summary and one line per sample
    summary = lora_run_dir / "eval" / "t.json"
    assert result.summary_path == str(summary) and summary in list_results(lora_run_dir / "eval")
    lines = summary.with_suffix(".jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 8 and set(json.loads(lines[0])["answers"]) == {"base", "tuned"}
    again = load_result(summary)
    assert again.metrics == result.metrics and again.samples == result.samples
    headers, rows = metrics_table(again)
    assert headers == ["metric", "base", "tuned", "gain"] and rows[0][0] == "bleu"
    gains = [row[1] for row in sample_table(again, "gain")[1]]
    assert gains == sorted(gains, reverse=True)
    assert handle.state == ModelState.READY


def test_batches_give_the_same_answers_as_single_samples_with_the_adapter(lora_run_dir, sample_dataset, tmp_path):
    handle = _handle(lora_run_dir)
    samples = samples_from_dataset(sample_dataset)[:5]
    batched = run_evaluation(handle, samples, EvalSettings(batch_size=5, max_new_tokens=10), out_dir=tmp_path)
    single = run_evaluation(handle, samples, EvalSettings(batch_size=1, max_new_tokens=10), out_dir=tmp_path)
    assert batched.variants == ["tuned"]
    assert [s["answers"] for s in batched.samples] == [s["answers"] for s in single.samples]
    assert any(s["answers"]["tuned"] for s in batched.samples)


def test_stop_keeps_the_samples_already_scored(lora_run_dir, sample_dataset, tmp_path):
    handle = _handle(lora_run_dir)
    stop = threading.Event()
    result = run_evaluation(
        handle,
        samples_from_dataset(sample_dataset)[:9],
        EvalSettings(batch_size=3, max_new_tokens=4),
        progress=lambda d, t, e: stop.set(),
        stop=stop,
        out_dir=tmp_path,
    )
    assert result.stopped and len(result.samples) == 3 and result.total == 9
    saved = load_result(result.summary_path)
    assert saved.stopped and len(saved.samples) == 3


def test_busy_while_training_and_compare_needs_an_adapter(tiny_models, sample_dataset, tmp_path):
    handle = ModelHandle()
    handle.load(str(tiny_models("qwen2_5_vl")))
    samples = samples_from_dataset(sample_dataset)[:2]
    with handle.use(ModelState.TRAINING):
        with pytest.raises(BusyError, match="training"):
            run_evaluation(handle, samples, EvalSettings(), out_dir=tmp_path)
    with pytest.raises(ConfigError, match="LoRA adapter"):
        run_evaluation(handle, samples, EvalSettings(compare_base=True), out_dir=tmp_path)
    result = run_evaluation(handle, samples, EvalSettings(max_new_tokens=4), out_dir=tmp_path)
    assert result.variants == ["model"]


def test_unreadable_image_is_skipped_with_its_reason(tiny_models, sample_dataset, tmp_path):
    folder = tmp_path / "ds"
    shutil.copytree(sample_dataset / "images", folder / "images")
    lines = (sample_dataset / "data.jsonl").read_text(encoding="utf-8").splitlines()[:3]
    (folder / "data.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "images" / "0002.png").write_bytes(b"not a png")
    handle = ModelHandle()
    handle.load(str(tiny_models("qwen2_5_vl")))
    result = run_evaluation(handle, samples_from_dataset(folder), EvalSettings(max_new_tokens=2), out_dir=tmp_path)
    assert [s["id"] for s in result.samples] == ["0001", "0003"]
    assert result.skipped[0]["id"] == "0002" and "0002.png" in str(result.skipped[0]["reason"])
    # The reason and the summary reach a Chinese page in Chinese, also from the saved files.
    reason = result.skipped[0]["reason"]
    assert localize(reason, "zh").startswith(str(folder / "images" / "0002.png") + "：") and localize(
        reason, "zh"
    ) != str(reason)
    saved = load_result(result.summary_path).skipped[0]["reason"]
    assert saved == reason and localize(saved, "zh") == localize(reason, "zh") != str(reason)
    summary = json.loads(Path(result.summary_path).read_text(encoding="utf-8"))
    assert summary["skipped"][0]["reason"] == str(reason) and "reason_zh" not in summary["skipped"][0]
    assert localize(summary_line(result), "zh").startswith("已评分 2/3 个样本") and "跳过 1 个" in localize(
        summary_line(result), "zh"
    )


def test_validation_split_of_a_run(lora_run_dir):
    from lab.dataset import split_dataset
    from lab.paths import SAMPLE_DATASET

    samples, source = samples_from_run(lora_run_dir)
    _, val = split_dataset(SAMPLE_DATASET, 0.2, 42)
    assert [s.id for s in samples] == [r["id"] for r in val] and "validation" in source
    assert all(s.images[0].startswith("/") for s in samples)


def test_settings_refuse_nonsense():
    with pytest.raises(ConfigError):
        EvalSettings(batch_size=0)
    with pytest.raises(ConfigError):
        EvalSettings(top_p=0)


def test_endpoint_is_scored_with_the_same_metrics(sample_dataset, tmp_path):
    samples = samples_from_dataset(sample_dataset / "data_caption_zh.jsonl")[:4]
    config = EndpointConfig(base_url="http://x/v1", model="m", concurrency=2)

    # The server answers each picture with its reference, found by the picture's data URL.
    def digest(url):
        return hashlib.sha256(url.encode()).hexdigest()[:12]  # as fake_openai.image_digest

    refs = {digest(encode_image(Path(s.images[0]), config.max_pixels, "png")): s.reference for s in samples}
    with FakeOpenAI(responder=lambda body: answer(refs.get(image_digest(body), "不知道"))) as server:
        config.base_url = server.base_url
        result = evaluate_endpoint(samples, config, out_dir=tmp_path, name="all")
        parts = server.requests[-1]["body"]["messages"][0]["content"]
    assert result.variants == ["endpoint"] and result.metrics["endpoint"]["exact_match"] == 100.0
    assert result.metrics["endpoint"]["bleu"] == pytest.approx(100.0)
    assert parts[0]["type"] == "image_url" and parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert "api_key" not in json.loads((tmp_path / "all.json").read_text())["settings"]


def test_unreachable_endpoint_is_one_sentence(sample_dataset, tmp_path):
    samples = samples_from_dataset(sample_dataset)[:2]
    with pytest.raises(LabError, match=r"^Evaluation stopped: cannot reach http://127.0.0.1:9/v1 \(3 tries\)\.$"):
        evaluate_endpoint(samples, EndpointConfig(base_url="http://127.0.0.1:9/v1", model="m"), out_dir=tmp_path)
    with pytest.raises(ConfigError):
        EndpointConfig(base_url="localhost:8000", model="m")


def test_cli_eval_prints_base_and_tuned(lora_run_dir, capsys):
    from lab.cli import main

    code = main(
        [
            "eval",
            "--adapter",
            str(lora_run_dir),
            "--dataset",
            "data/sample",
            "--compare-base",
            "--limit",
            "4",
            "--max-new-tokens",
            "6",
            "--name",
            "cli",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "base" in out and "tuned" in out and "rouge_l" in out
    assert (lora_run_dir / "eval" / "cli.jsonl").is_file()
    assert main(["eval", "--model", "demo"]) == 2
    assert "--dataset" in capsys.readouterr().err


@pytest.mark.parametrize("summary, samples", [("[1, 2]", ""), ("3", ""), ('{"skipped": "x"}', ""), ("{}", "[1]\n")])
def test_a_saved_result_of_the_wrong_shape_is_one_sentence(tmp_path, summary, samples):
    (tmp_path / "r.json").write_text(summary)
    (tmp_path / "r.jsonl").write_text(samples)
    with pytest.raises(LabError, match="Cannot read the evaluation results"):
        load_result(tmp_path / "r.json")


@pytest.mark.parametrize("family", families(slow_beyond=("qwen2_5_vl",)))
def test_every_family_is_evaluated_base_against_tuned(family, family_run, sample_dataset, tmp_path):
    handle = _handle(family_run(family))
    samples = samples_from_dataset(sample_dataset)[:4]  # the samples the adapter was trained on
    settings = EvalSettings(batch_size=2, max_new_tokens=12, compare_base=True)
    result = run_evaluation(handle, samples, settings, out_dir=tmp_path)
    assert result.variants == ["base", "tuned"] and len(result.samples) == 4
    assert all(0 <= result.metrics[v]["chrf"] <= 100 for v in result.variants)
    assert any(s["answers"]["base"] != s["answers"]["tuned"] for s in result.samples)  # the adapter was on, then off
