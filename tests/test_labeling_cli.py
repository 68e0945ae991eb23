"""``python -m lab label``: flags, errors, Ctrl-C, and exact-once after SIGKILL."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI
from labeling_images import many

from lab.cli import main

REPO = Path(__file__).resolve().parent.parent
KEY = "sk-cli-secret-1122334455"


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def data_lines(out: Path) -> list[str]:
    path = out / "data.jsonl"
    return path.read_text().splitlines() if path.is_file() else []


def start_cli(args: list[str], lab_home: Path) -> subprocess.Popen:
    env = {**os.environ, "LAB_HOME": str(lab_home), "OPENAI_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "lab", "label", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_lines(out: Path, n: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while len(data_lines(out)) < n:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.01)


def test_sigkill_midway_then_rerun_labels_every_image_exactly_once(server, tmp_path, lab_home):
    many(tmp_path / "pics", 60)
    server.latency = 0.1
    out = tmp_path / "ds"
    args = [
        "--images",
        str(tmp_path / "pics"),
        "--prompt",
        "sample_caption",
        "--out",
        str(out),
        "--base-url",
        server.base_url,
        "--model",
        "fake-vl",
        "--concurrency",
        "4",
    ]
    first = start_cli(args, lab_home)
    wait_for_lines(out, 12, first)
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    killed_at = len(data_lines(out))
    assert 12 <= killed_at < 60
    second = start_cli(args, lab_home)
    _, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    records = [json.loads(line) for line in data_lines(out)]
    assert len(records) == 60
    assert sorted(r["meta"]["source"] for r in records) == [f"{i:04d}.png" for i in range(60)]
    assert len({r["meta"]["key"] for r in records}) == 60
    summary = re.search(r"finished: (\d+) labeled, 0 failed, (\d+) skipped of 60", err)
    assert summary and (int(summary[1]), int(summary[2])) == (60 - killed_at, killed_at)
    for path in [*out.rglob("*"), *lab_home.rglob("*")]:
        assert not path.is_file() or KEY.encode() not in path.read_bytes(), path
    assert all(KEY not in r["url"] for r in server.requests)


def test_ctrl_c_stops_cleanly_and_keeps_the_finished_items(server, tmp_path, lab_home):
    many(tmp_path / "pics", 40)
    server.latency = 0.2
    out = tmp_path / "ds"
    process = start_cli(
        [
            "--images",
            str(tmp_path / "pics"),
            "--prompt",
            "sample_caption",
            "--out",
            str(out),
            "--base-url",
            server.base_url,
            "--model",
            "fake-vl",
            "--concurrency",
            "2",
        ],
        lab_home,
    )
    wait_for_lines(out, 3, process)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "stopping; finished items are kept" in err and "stopped:" in err
    kept = data_lines(out)
    assert 3 <= len(kept) < 40 and all(json.loads(line)["meta"]["status"] == "ok" for line in kept)


def test_seed_flags_estimate_and_resume_from_the_job_file(server, tmp_path, capsys):
    many(tmp_path / "pics", 5)
    target = tmp_path / "responses.json"
    argv = [
        "label",
        "--image_folder",
        str(tmp_path / "pics"),
        "--prompt",
        "ecommerce_classify",
        "--lang",
        "zh",
        "--output_json",
        str(target),
        "--max_retries",
        "1",
        "--base_url",
        server.base_url,
        "--model",
        "gpt-4o",
    ]
    assert main([*argv, "--estimate"]) == 0
    err = capsys.readouterr().err
    assert "estimate: 5 of 5 images to label" in err and "$" in err and server.count == 0
    server.responder = lambda body: __import__("fake_openai").json_answer(
        {"reason": "购物车页面", "label": "购物车页面"}
    )
    assert main([*argv, "--limit", "2"]) == 0
    out = tmp_path / "responses"
    assert len(data_lines(out)) == 2 and "note: writing the dataset folder" in capsys.readouterr().err
    assert server.requests[0]["body"]["messages"][0]["content"].startswith("你是一个电商领域识图专家")
    assert main(["label", "--out", str(out)]) == 0  # everything else from label_job.json
    assert len(data_lines(out)) == 5


def test_errors_are_one_sentence(tmp_path, capsys):
    many(tmp_path / "pics", 1)
    assert (
        main(
            [
                "label",
                "--images",
                str(tmp_path / "pics"),
                "--prompt",
                "sample_caption",
                "--out",
                str(tmp_path / "ds"),
                "--provider",
                "openai",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert err.startswith("error: No API key") and "OPENAI_API_KEY" in err and "Traceback" not in err
    assert (
        main(
            [
                "label",
                "--images",
                str(tmp_path / "nowhere"),
                "--prompt",
                "sample_caption",
                "--out",
                str(tmp_path / "ds"),
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--model",
                "m",
            ]
        )
        == 2
    )
    assert "The image folder" in capsys.readouterr().err
    assert main(["label", "--out", str(tmp_path / "fresh")]) == 2
    assert "Give --images DIR" in capsys.readouterr().err
    assert (
        main(["label", "--images", str(tmp_path / "pics"), "--prompt", "no_such_preset", "--out", str(tmp_path / "ds")])
        == 2
    )
    assert "no prompt preset named 'no_such_preset'" in capsys.readouterr().err


def test_a_chinese_locale_gets_the_estimate_and_the_errors_in_chinese(server, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LAB_LANG", "zh")
    many(tmp_path / "pics", 3)
    argv = [
        "label",
        "--images",
        str(tmp_path / "pics"),
        "--prompt",
        "sample_caption",
        "--out",
        str(tmp_path / "ds"),
        "--base-url",
        server.base_url,
        "--model",
        "fake-vl",
    ]
    assert main([*argv, "--estimate"]) == 0
    assert capsys.readouterr().err.startswith("预估：3 张图片中有 3 张待标注")
    assert main(["label", "--out", str(tmp_path / "fresh")]) == 2
    assert capsys.readouterr().err.strip() == "错误: 请用 --images DIR 指定要标注的图片文件夹。"
