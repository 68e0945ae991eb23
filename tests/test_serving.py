"""A real OpenAI-compatible server in the loop: our export, served by ``transformers serve``.

The LoRA run is merged into a complete model folder (``python -m lab export``), which
``transformers serve`` (the ``transformers[serving]`` extra) serves on 127.0.0.1; then our
labeler labels pictures through it and our endpoint evaluation scores it, as they would a
vLLM server of the same folder, and both must get exactly what the folder answers in this
process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from lora_run import sample_records

from lab.cli import main

pytestmark = pytest.mark.slow
SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def served(lora_run_dir, tmp_path):
    """``(base_url, model name)`` of the run's merged export, served by ``transformers serve``."""
    pytest.importorskip("fastapi", reason="transformers serve needs the transformers[serving] extra")
    pytest.importorskip("uvicorn", reason="transformers serve needs the transformers[serving] extra")
    merged = tmp_path / "merged"
    assert main(["export", "--adapter", str(lora_run_dir), "--out", str(merged)]) == 0
    port = _free_port()
    log = open(tmp_path / "serve.log", "w")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "transformers.cli.transformers",
            "serve",
            str(merged),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--device",
            "cpu",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).read()
                break
            except OSError:
                assert time.monotonic() < deadline, "transformers serve did not come up"
                time.sleep(0.5)
        yield f"http://127.0.0.1:{port}/v1", str(merged)  # the server names the model by its folder
    finally:
        server.terminate()
        server.wait(30)
        log.close()


def _answers(result_file: Path) -> dict[str, str]:
    rows = [json.loads(line) for line in result_file.with_suffix(".jsonl").read_text().splitlines()]
    return {row["id"]: next(iter(row["answers"].values())) for row in rows}


def test_our_labeler_and_endpoint_evaluation_against_transformers_serve(served, tmp_path, capsys):
    """Through the server, our labeler and our endpoint evaluation get what our own code gets from the same
    folder in this process: the server runs our export, and our requests carry the prompt and the pixels."""
    from lab.generate import generate_batch
    from lab.handle import ModelHandle
    from lab.images import open_image

    base_url, model = served
    records = sample_records(SAMPLE, 8)
    pics = tmp_path / "pics"
    pics.mkdir()
    for record in records[:3]:
        (pics / Path(record["images"][0]).name).write_bytes(Path(record["images"][0]).read_bytes())
    out = tmp_path / "labeled"
    assert main(
        [
            "label",
            "--images",
            str(pics),
            "--prompt",
            "sample_caption",
            "--out",
            str(out),
            "--base-url",
            base_url,
            "--model",
            model,
            "--max-new-tokens",
            "48",
            "--temperature",
            "0",
            "--image-format",
            "png",
        ]
    ) in (0, 1)  # png: the pixels as on disk; 1: every answer ran to the limit
    labeled = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    failed = [json.loads(line) for line in (out / "failures.jsonl").read_text().splitlines()]
    answers = {r["meta"]["source"]: r["messages"][-1]["content"] for r in labeled}
    answers.update({f["source"]: f["answer"] for f in failed})  # an answer cut off at the limit is kept there
    assert sorted(answers) == sorted(p.name for p in pics.iterdir()) and all(answers.values()), answers

    here = ModelHandle()
    here.load(model)
    conversation = [{"role": "user", "content": "<image>Describe this UI component in one sentence."}]
    for name, served_answer in answers.items():
        own = generate_batch(here.loaded, [conversation], [[open_image(pics / name)]], max_new_tokens=48)[0]
        assert served_answer == own.text, name

    data = tmp_path / "train8.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert (
        main(
            [
                "eval",
                "--endpoint",
                base_url,
                "--model",
                model,
                "--dataset",
                str(data),
                "--max-new-tokens",
                "32",
                "--name",
                "served",
            ]
        )
        == 0
    )
    assert "8/8 samples scored" in capsys.readouterr().out
    assert main(["eval", "--model", model, "--dataset", str(data), "--max-new-tokens", "32", "--name", "here"]) == 0
    results = Path(os.environ["LAB_HOME"]) / "eval"
    assert _answers(results / "served.json") == _answers(results / "here.json")
