"""The app's loaded model as the labeler (offline, free), through the shared model handle."""

import shutil

import pytest

from lab.errors import BusyError
from lab.generate import generate_batch
from lab.handle import ModelHandle, ModelState
from lab.images import open_image
from lab.labeling.answers import check_answer
from lab.labeling.batch import run_labeling
from lab.labeling.item import PromptSpec
from lab.labeling.local import LocalLabeler
from lab.labeling.store import read_rows

PROMPT = PromptSpec("You describe UI components.", "<image>Describe this UI component in one sentence.")


@pytest.fixture(scope="module")
def handle(tiny_models):
    model_handle = ModelHandle()
    model_handle.load(str(tiny_models("qwen2_5_vl")))
    return model_handle


def test_local_model_labels_a_folder_as_generate_batch_answers(handle, sample_dataset, tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    for name in ("0001.png", "0002.png", "0003.png"):
        shutil.copy(sample_dataset / "images" / name, pics / name)
    labeler = LocalLabeler(handle, max_new_tokens=6, max_pixels=128 * 128)
    progress = run_labeling(pics, tmp_path / "ds", PROMPT, labeler)
    assert progress.state == "finished" and progress.ok + progress.failed == 3 and progress.cost_usd == 0
    assert handle.state == ModelState.READY  # released after the run

    outcomes = {
        r["meta"]["source"]: ("ok", r["messages"][-1]["content"], r["meta"]["labeler"])
        for r in read_rows(tmp_path / "ds" / "data.jsonl")
    }
    outcomes.update(
        {f["source"]: (f["status"], f["answer"], None) for f in read_rows(tmp_path / "ds" / "failures.jsonl")}
    )
    conversation = [{"role": "system", "content": PROMPT.system}, {"role": "user", "content": PROMPT.user}]
    for name in ("0001.png", "0002.png", "0003.png"):
        expected = generate_batch(
            handle.loaded, [conversation], [[open_image(pics / name, max_pixels=128 * 128)]], max_new_tokens=6
        )[0]
        verdict = check_answer(expected.text, finish_reason="length" if expected.completion_tokens >= 6 else "stop")
        status, text, labeler_name = outcomes[name]
        assert (status, text) == (verdict.status, verdict.text)
        assert labeler_name in (None, labeler.name) and labeler.name.startswith("local:")


def test_a_busy_model_refuses_the_run_at_once(handle, sample_dataset, tmp_path):
    pics = tmp_path / "pics"
    pics.mkdir()
    shutil.copy(sample_dataset / "images" / "0001.png", pics)
    with handle.use(ModelState.TRAINING):
        with pytest.raises(BusyError, match="training"):
            run_labeling(pics, tmp_path / "ds", PROMPT, LocalLabeler(handle, max_new_tokens=4))
    assert not (tmp_path / "ds" / "data.jsonl").read_text()


def test_cli_labels_with_a_local_model_and_resuming_asks_for_it_again(tiny_models, sample_dataset, tmp_path, capsys):
    from lab.cli import main

    pics = tmp_path / "pics"
    pics.mkdir()
    shutil.copy(sample_dataset / "images" / "0004.png", pics)
    out = tmp_path / "ds"
    model = str(tiny_models("qwen2_5_vl"))
    # Greedy, the untrained model repeats a blank line to the limit: nothing usable, so the exit status is 1.
    assert (
        main(
            [
                "label",
                "--images",
                str(pics),
                "--prompt",
                "sample_caption",
                "--out",
                str(out),
                "--local-model",
                model,
                "--max-tokens",
                "4",
                "--temperature",
                "0",
            ]
        )
        == 1
    )
    err = capsys.readouterr().err
    assert "finished: 0 labeled, 1 failed" in err and "of 1" in err and "$0.0000" in err
    assert "Nothing was labeled: every image failed (the first: 0004.png: empty answer)" in err
    rows = list(read_rows(out / "data.jsonl")) + list(read_rows(out / "failures.jsonl"))
    assert len(rows) == 1 and rows[0].get("source", rows[0].get("meta", {}).get("source")) == "0004.png"
    assert main(["label", "--out", str(out)]) == 2
    assert "used a local model; give --local-model" in capsys.readouterr().err
