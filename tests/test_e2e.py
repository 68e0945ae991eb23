"""The whole loop, as a person does it: through the launched app (gradio_client), then the CLI.

Tiny demo model, the bundled sample pictures, and the test labeler server, which answers
each picture with the sample set's reference caption for it (found by its pixels), as a
strong labeler would.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fake_openai import FakeOpenAI, answer
from gradio_client import handle_file
from PIL import Image

from lab.train_config import TrainConfig
from lab.training import job as jobs
from lab.ui.train_tab import FORM_FIELDS, form_values

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
N_IMAGES = 12


def _fingerprint(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize((16, 16)), dtype=np.float32)


@pytest.fixture(scope="module")
def labeler(sample_dataset):
    """A chat-completions server that answers with the reference caption of the picture it is shown."""
    refs = {}
    for line in (sample_dataset / "data.jsonl").read_text().splitlines():
        record = json.loads(line)
        image = Image.open(sample_dataset / record["images"][0])
        refs[record["id"]] = (_fingerprint(image), record["messages"][-1]["content"])

    def reply(body):
        part = next(p for p in body["messages"][-1]["content"] if p.get("type") == "image_url")
        data = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
        seen = _fingerprint(Image.open(io.BytesIO(data)))
        best = min(refs.values(), key=lambda ref: float(np.abs(ref[0] - seen).mean()))
        return answer(best[1])

    with FakeOpenAI(responder=reply) as server:
        yield server


@pytest.fixture
def pictures(tmp_path, sample_dataset):
    folder = tmp_path / "pictures"
    folder.mkdir()
    for source in sorted((sample_dataset / "images").glob("*.png"))[:N_IMAGES]:
        shutil.copy(source, folder / source.name)
    return folder


def _labeler_values(server):
    # provider, base_url, model, api_key, temperature, max_tokens, max_pixels, json_mode, reask, concurrency, retries,
    # timeout
    return ["", server.base_url, "fake-vl", "sk-test-loop", 0.0, 256, 200 * 200, False, False, 4, 0, 10]


def _until(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if row.get("loss") is not None]


def _rouge_l(metrics_table) -> tuple[float, float]:
    row = next(r for r in metrics_table["value"]["data"] if r[0] == "rouge_l")
    return row[1], row[2]


def test_the_loop_through_the_app(launch_app, labeler, pictures, lab_home):
    app, ctx, client = launch_app(model="demo")
    _until(lambda: ctx.handle.state.value == "ready", 120, "the demo model")

    # Prompt design: preview the caption prompt on two sample pictures.
    system, user, want_json, keys = client.predict("sample_caption", "en", api_name="/prompt_load")
    summary, gallery_a, _, _ = client.predict(
        ["0001.png", "0002.png"],
        None,
        system,
        user,
        False,
        "",
        False,
        "",
        "",
        False,
        "",
        *_labeler_values(labeler),
        api_name="/prompt_preview",
    )
    assert "**A**: 2/2 answered, 2 usable" in summary and gallery_a[0]["caption"].startswith("A donut chart")

    # Labeling: the whole folder, into a new dataset.
    status, _ = client.predict(
        str(pictures), "classroom", "sample_caption", "en", 0, *_labeler_values(labeler), api_name="/label_start"
    )
    assert status.startswith("Started")
    progress = _until(
        lambda: (p := client.predict("classroom", api_name="/label_progress")[0]) and "finished" in p and p,
        60,
        "labeling",
    )
    assert f"finished: {N_IMAGES} labeled · 0 failed" in progress
    dataset = lab_home / "data" / "classroom"

    # Train: the labeled dataset is preselected; train until the loss falls.
    chosen, note = client.predict("data/sample", api_name="/train_tab_select")
    assert [Path(v) for v in chosen["value"]] == [dataset] and f"Dataset preselected: {dataset}" in note
    cfg = TrainConfig.from_preset(
        "cpu_demo",
        [f"dataset={chosen['value'][0]}", "run_name=loop", "num_epochs=25", "val_ratio=0", "eval_steps=1000"],
    )
    assert client.predict(**dict(zip(FORM_FIELDS, form_values(cfg))), api_name="/train_start") == "Started loop."
    job = jobs.current_job()
    assert job.wait(600) and job.status == "finished", job.message
    losses = _losses(lab_home / "checkpoints" / "loop")
    assert losses[-1] < 0.5 * losses[0], losses

    # Evaluate: base vs tuned on the labeled set; the tuned model is ahead.
    progress, summary, metrics, chart, samples = client.predict(
        str(dataset), True, 4, 24, 0, "gain", api_name="/evaluate"
    )
    base, tuned = _rouge_l(metrics)
    assert f"{N_IMAGES}/{N_IMAGES} samples scored" in summary and tuned > base + 20, (base, tuned)

    # Chat: the tuned model describes a picture.
    job = client.submit(
        {"text": "Describe this UI component in one sentence.", "files": [handle_file(str(pictures / "0001.png"))]},
        "",
        0.0,
        0.9,
        24,
        True,
        False,
        api_name="/chat",
    )
    chatbot = job.result()[0]
    reply = chatbot[-1]["content"]
    text = reply if isinstance(reply, str) else " ".join(p.get("text", "") for p in reply if isinstance(p, dict))
    assert "donut" in text.lower(), text

    # Export: the finished run is preselected; merge it into a complete model folder.
    assert client.predict(None, api_name="/export_tab_select")["value"] == "loop"
    out = lab_home / "models" / "loop-merged"
    status, command, _ = client.predict(
        "loop", "", str(out), "auto", "cpu", False, "", "", False, 4096, 1, 0.9, api_name="/export"
    )
    assert "Exported loop" in status and (out / "config.json").is_file() and f"vllm serve {out}" in command
    for written in lab_home.rglob("*"):
        if written.is_file() and written.suffix in {".json", ".jsonl", ".yaml", ".txt", ".log"}:
            assert "sk-test-loop" not in written.read_text(errors="ignore"), written


def _lab(*args, env, timeout=600):
    result = subprocess.run(
        [sys.executable, "-m", "lab", *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"python -m lab {' '.join(args)}\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_the_loop_through_the_cli(labeler, pictures, lab_home, monkeypatch):
    import os

    env = dict(os.environ, LAB_HOME=str(lab_home), OPENAI_API_KEY="sk-test-loop")
    dataset = lab_home / "data" / "cli-set"
    _lab(
        "label",
        "--images",
        str(pictures),
        "--prompt",
        "sample_caption",
        "--out",
        str(dataset),
        "--base-url",
        labeler.base_url,
        "--model",
        "fake-vl",
        "--concurrency",
        "4",
        env=env,
    )
    assert len((dataset / "data.jsonl").read_text().splitlines()) == N_IMAGES
    _lab(
        "train",
        "--preset",
        "cpu_demo",
        "--set",
        f"dataset={dataset}",
        "run_name=cli-run",
        "num_epochs=25",
        "val_ratio=0",
        "eval_steps=1000",
        env=env,
    )
    run = lab_home / "checkpoints" / "cli-run"
    losses = _losses(run)
    assert losses[-1] < 0.5 * losses[0], losses
    out = _lab(
        "eval",
        "--model",
        "demo",
        "--adapter",
        str(run),
        "--dataset",
        str(dataset),
        "--compare-base",
        "--max-new-tokens",
        "24",
        env=env,
    )
    assert "rouge" in out.lower()
    summary = json.loads(sorted((run / "eval").glob("*.json"))[-1].read_text())  # saved in the run folder
    scores = summary["metrics"]
    assert scores["tuned"]["rouge_l"] > scores["base"]["rouge_l"] + 20, scores
    answer_text = _lab(
        "chat",
        "--model",
        "demo",
        "--adapter",
        str(run),
        "--image",
        str(pictures / "0001.png"),
        "--prompt",
        "Describe this UI component in one sentence.",
        env=env,
    )
    assert "donut" in answer_text.lower(), answer_text
    merged = lab_home / "models" / "cli-merged"
    _lab("export", "--model", "demo", "--adapter", str(run), "--out", str(merged), env=env)
    assert (merged / "config.json").is_file() and (merged / "tokenizer_config.json").is_file()
