"""What the tabs do, on the command line: prompt design, review, runs, saved evaluations, datasets, chat.

Each command is called through ``lab.cli.main`` as a person types it, against a real
chat-completions server on 127.0.0.1 (``FakeOpenAI``) or the tiny model; ``--json``
output is read back as a script would.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI, answer, json_answer
from labeling_images import many

from lab.cli import main

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"


@pytest.fixture
def server():
    with FakeOpenAI() as fake:
        yield fake


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def _labeler(server) -> list[str]:
    return ["--base-url", server.base_url, "--model", "fake-vl"]


# ---------------------------------------------------------------- prompt design


def test_prompt_list_show_save_and_label_with_the_saved_preset(server, tmp_path, capsys):
    assert main(["prompt", "list", "--json"]) == 0
    listed = {row["name"]: row for row in _json(capsys)}
    assert listed["sample_caption"]["saved"] is False and listed["sample_json"]["json"] is True
    assert main(["prompt", "show", "sample_json", "--lang", "zh", "--json"]) == 0
    shown = _json(capsys)
    assert shown["json"] is True and shown["lang"] == "zh" and shown["expected_keys"]

    assert (
        main(
            [
                "prompt",
                "save",
                "mine",
                "--prompt",
                "sample_caption",
                "--user",
                "<image>Name the component.",
                "--title",
                "Mine",
            ]
        )
        == 0
    )
    assert "python -m lab label --prompt mine" in capsys.readouterr().out
    assert main(["prompt", "list", "--json"]) == 0
    assert {"name": "mine", "title": "Mine", "json": False, "languages": ["en"], "saved": True} in _json(capsys)
    many(tmp_path / "pics", 1)
    assert (
        main(
            [
                "label",
                "--images",
                str(tmp_path / "pics"),
                "--prompt",
                "mine",
                "--out",
                str(tmp_path / "ds"),
                *_labeler(server),
            ]
        )
        == 0
    )
    asked = server.requests[-1]["body"]["messages"][-1]["content"]
    assert any(part.get("text") == "Name the component." for part in asked), asked


def test_prompt_preview_compares_a_and_b_and_checks_the_json(server, capsys):
    def reply(body):  # a caption for the text prompt; for the JSON prompt, JSON without its second key
        text = json.dumps(body["messages"], ensure_ascii=False)
        return json_answer({"组件名": "按钮"}) if "json" in text.lower() else answer("A red button.")

    server.responder = reply
    code = main(
        [
            "prompt",
            "preview",
            "--samples",
            "2",
            "--prompt",
            "sample_caption",
            "--prompt-b",
            "sample_json",
            "--lang-b",
            "zh",
            *_labeler(server),
            "--json",
        ]
    )
    shown = _json(capsys)
    assert code == 0 and [v["name"] for v in shown["variants"]] == ["A", "B"]
    a, b = shown["variants"]
    assert a["usable"] == 2 and [r["answer"] for r in a["results"]] == ["A red button."] * 2
    assert a["results"][0]["image"].endswith("0001.png") and a["summary"].startswith("A: 2/2 answered, 2 usable")
    assert b["usable"] == 0 and all(r["json_ok"] is False and "lacks the key" in r["reason"] for r in b["results"])
    assert b["prompt"]["json"] is True and server.count == 4

    # Nothing usable: exit status 1, and why, line by line as the answers come.
    assert main(["prompt", "preview", "--samples", "1", "--prompt", "sample_json", *_labeler(server)]) == 1
    out, err = capsys.readouterr()
    assert out.startswith("A 0001.png invalid") and "JSON lacks the key(s)" in out
    assert "A: 1/1 answered, 0 usable" in out and "No answer is usable yet" in err


def test_prompt_preview_refuses_a_bad_image_before_asking(server, tmp_path, capsys):
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    assert main(["prompt", "preview", "--images", str(tmp_path / "bad.png"), *_labeler(server)]) == 2
    assert "bad.png" in capsys.readouterr().err and server.count == 0


# ---------------------------------------------------------------- labeling: nothing done, review


def test_label_exits_1_with_the_reason_when_every_image_failed(server, tmp_path, capsys):
    many(tmp_path / "pics", 3)
    server.responder = lambda body: answer("")
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
                *_labeler(server),
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "finished: 0 labeled, 3 failed" in err
    assert "Nothing was labeled: every image failed (the first: 000" in err and "empty answer" in err


def test_review_lists_edits_rejects_and_walks_the_items(server, tmp_path, capsys, monkeypatch):
    many(tmp_path / "pics", 4)
    (tmp_path / "pics" / "broken.png").write_bytes(b"nope")
    out = tmp_path / "ds"
    assert (
        main(
            [
                "label",
                "--images",
                str(tmp_path / "pics"),
                "--prompt",
                "sample_caption",
                "--out",
                str(out),
                *_labeler(server),
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["review", str(out), "--json"]) == 0
    items = _json(capsys)
    assert len(items) == 4 and all(item["answer"].startswith("label-") for item in items)
    assert main(["review", str(out), "--failures", "--json"]) == 0
    assert [(f["source"], f["status"]) for f in _json(capsys)] == [("broken.png", "bad_image")]

    first, second, third, fourth = (item["id"] for item in items)
    assert main(["review", str(out), "--edit", first, "A blue chart.", "--reject", second]) == 0
    assert capsys.readouterr().out.strip() == "Saved: 1 answer(s) edited, 1 item(s) rejected."
    monkeypatch.setattr("sys.stdin", io.StringIO("a\ne\nA green tab bar.\nr\n"))
    assert main(["review", str(out), "--interactive"]) == 0
    assert "Saved: 1 answer(s) edited, 1 item(s) rejected." in capsys.readouterr().out
    kept = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert [(r["id"], r["messages"][-1]["content"]) for r in kept] == [
        (first, "A blue chart."),
        (third, "A green tab bar."),
    ]
    rejected = [json.loads(line)["id"] for line in (out / "rejected.jsonl").read_text().splitlines()]
    assert rejected == [second, fourth]
    assert main(["review", str(out), "--edit", "nope", "x"]) == 2
    assert "No item with id nope" in capsys.readouterr().err


# ---------------------------------------------------------------- errors, training data


def test_an_unexpected_error_is_one_sentence_and_its_traceback_goes_to_the_log(monkeypatch, capsys, lab_home):
    def broken(args):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr("lab.cli.data.run_list", broken)
    monkeypatch.delenv("LAB_DEBUG", raising=False)
    assert main(["data", "list"]) == 1
    err = capsys.readouterr().err
    log = lab_home / "logs" / "cli.log"
    assert err == f"error: python -m lab data failed: RuntimeError: boom; details in {log}.\n"
    assert "Traceback" in log.read_text() and "second line" in log.read_text()
    assert main(["data", "list", "--verbose"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err
    monkeypatch.setenv("LAB_DEBUG", "1")
    assert main(["data", "list"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "not found"),
        ("", "has no records to train on"),
        ("not json\n", "is not valid JSON"),
    ],
)
def test_train_refuses_bad_data_before_a_folder_or_a_model(tmp_path, capsys, lab_home, content, said):
    data = tmp_path / "data.jsonl"
    if content is not None:
        data.write_text(content)
    started = time.monotonic()
    assert main(["train", "--preset", "cpu_demo", "--set", f"dataset={data}", "run_name=never"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and said in err and "Traceback" not in err, err
    assert not (lab_home / "checkpoints" / "never").exists() and not (lab_home / "models").exists()
    assert time.monotonic() - started < 60  # refused before loading anything, not after


# ---------------------------------------------------------------- runs, saved evaluations, datasets


def _a_run_with_an_evaluation(home: Path) -> tuple[Path, Path]:
    from lab.evaluation.runner import EvalResult, save_result
    from lab.train_config import TrainConfig
    from lab.training.metrics import append_metrics

    run = home / "checkpoints" / "demo-run"
    run.mkdir(parents=True)
    TrainConfig.from_preset("cpu_demo", ["run_name=demo-run", "max_steps=3"]).to_yaml(run / "config.yaml")
    append_metrics(run, {"event": "start", "time": time.time(), "step": 0, "total_steps": 3})
    for step, loss in enumerate([8.0, 5.0, 2.5], start=1):
        append_metrics(run, {"step": step, "epoch": step / 3, "loss": loss, "lr": 0.005})
    append_metrics(run, {"event": "end", "time": time.time(), "step": 3, "loss": 2.5})
    samples = [
        {
            "id": str(i),
            "images": [],
            "prompt": "Describe.",
            "reference": f"ref {i}",
            "answers": {"base": "noise", "tuned": f"ref {i}"},
            "scores": {"base": {"rouge_l": 0.0}, "tuned": {"rouge_l": 100.0 - i}},
            "gain": 100.0 - i,
        }
        for i in range(3)
    ]
    result = EvalResult(
        name="sample-eval",
        source="data/sample",
        variants=["base", "tuned"],
        metrics={"base": {"rouge_l": 0.0}, "tuned": {"rouge_l": 99.0}},
        samples=samples,
        total=3,
    )
    return run, save_result(result, run / "eval")


def test_runs_and_saved_evaluations(lab_home, capsys):
    run, summary = _a_run_with_an_evaluation(lab_home)
    assert main(["runs", "list", "--json"]) == 0
    (listed,) = _json(capsys)
    assert (listed["name"], listed["status"], listed["step"], listed["loss"]) == ("demo-run", "finished", 3, 2.5)
    assert main(["runs", "list"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["run", "status", "method"] and table[1].split()[:2] == ["demo-run", "finished"]
    assert main(["runs", "show", "demo-run", "--json"]) == 0
    shown = _json(capsys)
    assert [p["value"] for p in shown["loss_curve"]] == [8.0, 5.0, 2.5] and shown["evaluations"] == [str(summary)]
    assert "run_name: demo-run" in shown["config"]
    assert main(["runs", "show", "demo-run"]) == 0
    assert "loss 8.0000 █▄▁ 2.5000" in capsys.readouterr().out

    assert main(["eval", "list", "--json"]) == 0
    (found,) = _json(capsys)
    assert found["path"] == str(summary) and found["variants"] == ["base", "tuned"] and found["scored"] == 3
    assert main(["eval", "show", str(summary), "--sort", "id", "--json"]) == 0
    shown = _json(capsys)
    assert [s["id"] for s in shown["samples"]] == ["0", "1", "2"] and shown["summary"].startswith("3/3 samples scored")
    assert main(["eval", "show", str(summary), "--sample", "2"]) == 0
    assert "tuned: ref 2" in capsys.readouterr().out
    assert main(["eval", "show", str(summary), "--sample", "9"]) == 2


def test_data_list_and_show(capsys):
    assert main(["data", "list", "--json"]) == 0
    sample = next(row for row in _json(capsys) if row["path"] == str(SAMPLE))
    assert sample["records"] == 60 and sample["images"] == 60
    assert main(["data", "show", str(SAMPLE), "--page", "3", "--json"]) == 0
    shown = _json(capsys)
    assert (shown["page"], shown["pages"], len(shown["records"])) == (3, 3, 12)
    assert shown["records"][-1]["id"] == "0060" and shown["records"][-1]["answer"]


def test_export_shows_the_serving_command_without_merging(tmp_path, capsys):
    assert main(["export", "--adapter", "any", "--out", str(tmp_path / "merged"), "--show-command"]) == 0
    out = capsys.readouterr().out
    assert f"vllm serve {tmp_path / 'merged'}" in out and "OpenAI(" in out and not (tmp_path / "merged").exists()


# ---------------------------------------------------------------- chat, and a run as the labeler


def test_chat_keeps_a_conversation_in_a_history_file(lora_run_dir, tmp_path, capsys):
    history = tmp_path / "talk.json"
    image = str(SAMPLE / "images" / "0001.png")
    base = ["chat", "--adapter", str(lora_run_dir), "--history", str(history), "--max-new-tokens", "6"]
    assert main([*base, "--image", image, "--prompt", "Describe this UI component in one sentence."]) == 0
    assert main([*base, "--prompt", "And its colour?"]) == 0
    turns = json.loads(history.read_text())
    assert [(t["role"], t["text"][:8]) for t in turns[::2]] == [("user", "Describe"), ("user", "And its ")]
    assert (
        turns[0]["images"] == [image]
        and turns[2]["images"] == []
        and all(t["role"] == "assistant" for t in turns[1::2])
    )
    assert capsys.readouterr().out == f"{turns[1]['text']}\n{turns[3]['text']}\n"  # streamed, as saved

    compared = tmp_path / "both.json"
    assert (
        main(
            [
                "chat",
                "--adapter",
                str(lora_run_dir),
                "--history",
                str(compared),
                "--compare",
                "--image",
                image,
                "--prompt",
                "Describe this UI component in one sentence.",
                "--max-new-tokens",
                "6",
            ]
        )
        == 0
    )
    sides = json.loads(compared.read_text())
    assert set(sides) == {"base", "tuned"} and [len(sides["base"]), len(sides["tuned"])] == [2, 2]
    out = capsys.readouterr().out
    assert out.startswith("[base] ") and "\n[tuned] " in out


def test_chat_on_the_terminal(lora_run_dir, tmp_path, capsys, monkeypatch):
    history = tmp_path / "talk.json"
    image = SAMPLE / "images" / "0002.png"
    lines = [
        f"/image {image}",
        "What is it?",
        "/adapter off",
        "And without the adapter?",
        "/what",
        "/reset",
        "Hi",
        "/quit",
        "never read",
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert main(["chat", "--adapter", str(lora_run_dir), "--history", str(history), "--max-new-tokens", "4"]) == 0
    err = capsys.readouterr().err
    assert "1 image(s) go with the next message." in err and "Unknown command /what" in err
    assert "A new conversation." in err
    turns = json.loads(history.read_text())
    assert [t["text"] for t in turns if t["role"] == "user"] == ["Hi"]  # after /reset, one exchange


def test_a_runs_adapter_labels_a_folder(lora_run_dir, tmp_path, capsys):
    pics = tmp_path / "pics"
    pics.mkdir()
    for name in ("0001.png", "0002.png"):
        (pics / name).write_bytes((SAMPLE / "images" / name).read_bytes())
    out = tmp_path / "relabeled"
    code = main(
        [
            "label",
            "--images",
            str(pics),
            "--prompt",
            "sample_caption",
            "--out",
            str(out),
            "--local-model",
            str(lora_run_dir),
            "--temperature",
            "0",
        ]
    )
    job = json.loads((out / "label_job.json").read_text())
    assert job["labeler"]["model"].endswith(f"+{lora_run_dir.name}") and job["labeler"]["local"] is True
    assert job["labeler"]["max_pixels"] == 256 * 28 * 28  # the local labeler's own default
    records = [json.loads(line) for line in (out / "data.jsonl").read_text().splitlines()]
    assert code == 0 and records, capsys.readouterr().err  # the fine-tuned model answers, and stops
    assert all(r["meta"]["labeler"] == job["labeler"]["model"] for r in records)
