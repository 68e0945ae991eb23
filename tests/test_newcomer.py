"""The traps a newcomer falls into, each tried as they would: through the app's API, the CLI, or the files.

A labeled folder's bookkeeping offered as a dataset, a form that advertises values it then
refuses, a training run started on an empty or missing dataset (and the folder it leaves),
an evaluation error that leaves "Evaluating…" behind, a handled refusal printed as a
traceback, and the folders the app writes into a checkout left for git to show.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from lab.train_config import TrainConfig
from lab.ui.train_tab import FORM_FIELDS, form_values

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"


def _record(n: int = 1) -> str:
    return (
        json.dumps(
            {
                "id": str(n),
                "images": [],
                "messages": [{"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}],
            }
        )
        + "\n"
    )


def _datasets(home: Path) -> dict[str, Path]:
    """``good`` (two records, with a labeler's failures and rejections next to it), then ``empty``
    (written later: a labeling run whose every answer failed)."""
    import os
    import time

    good, empty = home / "data" / "good", home / "data" / "empty"
    for folder in (good, empty):
        folder.mkdir(parents=True)
    (good / "data.jsonl").write_text(_record(1) + _record(2))
    (good / "val.jsonl").write_text(_record(3))
    for name in ("failures.jsonl", "rejected.jsonl"):
        (good / name).write_text('{"key": "x", "reason": "empty answer"}\n')
        (empty / name).write_text('{"key": "y", "reason": "empty answer"}\n')
    (empty / "data.jsonl").write_text("")
    now = time.time()
    os.utime(good / "data.jsonl", (now - 60, now - 60))
    return {"good": good, "empty": empty}


def test_a_labeled_folders_bookkeeping_is_never_offered_as_a_dataset(lab_home):
    from lab.dataset import NOT_DATASETS, latest_dataset, list_datasets
    from lab.labeling.store import FAILURES_FILE, REJECTED_FILE

    assert {FAILURES_FILE, REJECTED_FILE} == set(NOT_DATASETS)
    found = _datasets(lab_home)
    listed = list_datasets(include_variants=True)
    assert found["good"] / "val.jsonl" in listed  # a split is a dataset
    assert not [p for p in listed if p.name in NOT_DATASETS], listed
    assert latest_dataset() == found["good"]  # the newest with records
    assert latest_dataset(with_records=False) == found["empty"]


def test_the_train_form_takes_what_its_api_advertises_and_refuses_an_empty_dataset(launch_app, lab_home):
    app, ctx, client = launch_app(model="")
    found = _datasets(lab_home)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    quant = next(p for p in api["/train_start"]["parameters"] if p["parameter_name"] == "quant_bits")
    advertised = quant["type"]["enum"]
    assert advertised == ["4", "8"], quant  # what a script reads from the API ...
    cfg = TrainConfig.from_preset("qlora", ["run_name=q"])
    form = dict(zip(FORM_FIELDS, form_values(cfg)))
    for bits in advertised:  # ... is what the form takes
        shown = client.predict(preset="qlora", **{**form, "quant_bits": bits}, api_name="/train_command")
        assert shown["value"].startswith("python -m lab train --preset qlora"), shown
        assert ("quant_bits=8" in shown["value"]) == (bits == "8")

    # Opening the Train tab preselects the newest dataset that has records, and says which and why.
    shown, note = client.predict(str(SAMPLE), api_name="/train_tab_select")
    assert shown["value"] == [str(found["good"])], shown
    assert f"Dataset preselected: {found['good']}" in note and "(2 records)" in note, note
    assert f"{found['empty']} has no records yet" in note, note
    shown, note = client.predict("data/mine", api_name="/train_tab_select")
    assert "value" not in shown and note == "", (shown, note)  # a choice of the person's own stays

    # Start on the empty one: one sentence at once, and no run folder left behind.
    cfg = TrainConfig.from_preset("cpu_demo", [f"dataset={found['empty']}", "run_name=nothing"])
    with pytest.raises(Exception, match="has no records to train on"):
        client.predict(**dict(zip(FORM_FIELDS, form_values(cfg))), api_name="/train_start")
    assert not (lab_home / "checkpoints" / "nothing").exists()
    choices = client.predict(api_name="/evaluate_data_choices")
    assert str(found["good"] / "val.jsonl") in str(choices) and "failures.jsonl" not in str(choices), choices


def test_an_evaluation_refused_leaves_no_progress_behind_and_a_refusal_prints_no_traceback(launch_app, capfd):
    app, ctx, client = launch_app(model="")
    capfd.readouterr()
    progress, summary, *_ = client.predict(source="/no/such/data", api_name="/evaluate")
    assert progress == "" and summary.startswith("⚠️ ") and "/no/such/data" in summary, (progress, summary)
    with pytest.raises(Exception, match="No model is loaded"):
        client.predict({"text": "hi", "files": []}, api_name="/chat")
    printed = capfd.readouterr()
    assert "Traceback" not in printed.out + printed.err, printed.err[-2000:]


@pytest.mark.parametrize("folder", ["uploads", "exports", ".cache"])
def test_what_the_app_writes_into_a_checkout_is_ignored_by_git(folder):
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    found = subprocess.run(["git", "check-ignore", "-q", f"{folder}/x/file.png"], cwd=REPO)
    assert found.returncode == 0, f"{folder}/ is not git-ignored"


# ---------------------------------------------------------------- the local labeler, chat on 4 bits


def _wait_ready(ctx, timeout: float = 180) -> None:
    import time

    deadline = time.monotonic() + timeout
    time.sleep(0.2)
    while ctx.handle.state.value == "loading" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ctx.handle.state.value == "ready", ctx.handle.describe()


def test_the_local_labeler_has_its_own_settings_and_shows_its_answers_as_they_come(launch_app):
    from lab.labeling.client import LabelerConfig
    from lab.labeling.local import LOCAL_DEFAULTS
    from lab.ui.prompt_tab import API_ONLY, LABELER_INPUTS, LOCAL_KNOBS

    app, ctx, client = launch_app(model="demo")
    api = LabelerConfig()
    knobs = [getattr(api, name) for name in LOCAL_KNOBS]
    shown = client.predict("local", *knobs, api_name="/prompt_provider")
    hidden, values, notice = shown[: len(API_ONLY)], shown[len(API_ONLY) : -1], shown[-1]  # (a button is no API value)
    assert all(update.get("visible") is False for update in hidden), hidden  # no URL, model, key for the local model
    assert [v["value"] for v in values] == [LOCAL_DEFAULTS[name] for name in LOCAL_KNOBS]
    assert notice["visible"] is False  # nor "No API key is set"
    back = client.predict("openai", *[LOCAL_DEFAULTS[name] for name in LOCAL_KNOBS], api_name="/prompt_provider")
    assert [v["value"] for v in back[len(API_ONLY) : -1]] == knobs and back[0]["visible"] is True

    _wait_ready(ctx)
    labeler = {**{name: getattr(api, name) for name in LABELER_INPUTS}, "provider": "local", **LOCAL_DEFAULTS}
    system, user, want_json, keys = client.predict("sample_caption", "en", api_name="/prompt_load")
    job = client.submit(
        ["0001.png", "0002.png"],
        None,
        system,
        user,
        want_json,
        keys,
        False,
        "",
        "",
        False,
        "",
        api_name="/prompt_preview",
        **labeler,
    )
    summary, gallery_a, _, rows = job.result(timeout=600)
    steps = [output[0] for output in job.outputs()]
    assert steps[0] == "Answering… 0 of 2 answers so far." and "Answering… 1 of 2 answers so far." in steps
    assert summary.startswith("**A**: 2/2 answered"), summary  # not "0/2 usable" over empty answers
    captions = [item["caption"] for item in gallery_a]
    assert len(captions) == 2 and all(c.split("] ", 1)[-1].strip() for c in captions), captions  # words, however odd
    assert "empty answer" not in summary + str(rows)
    assert all(int(r[5].split("+")[1]) <= LOCAL_DEFAULTS["max_new_tokens"] for r in rows["data"])


def test_chat_on_a_4bit_model_on_the_cpu_and_a_broken_answer_keeps_the_message(launch_app, monkeypatch):
    import lab.generate

    app, ctx, client = launch_app(model="")
    client.predict("demo", "4bit", api_name="/model_load")
    _wait_ready(ctx)
    assert ctx.handle.describe()["quantization"] == "4bit" and ctx.handle.loaded.device == "cpu"
    message = {"text": "Describe this UI component in one sentence.", "files": []}
    job = client.submit(message, "", 0.7, 0.9, 8, True, False, api_name="/chat")
    chat, *_ = job.result(timeout=300)
    assert len(chat) == 2 and chat[1]["content"][0]["text"].strip()  # the 4-bit model answered

    def breaks_off(*args, **kwargs):
        yield "A half"
        raise RuntimeError("the kernel fell over")

    monkeypatch.setattr(lab.generate, "stream_generate", breaks_off)
    job = client.submit(message, "", 0.0, 0.9, 8, True, False, api_name="/chat")
    with pytest.raises(Exception, match="Answering failed: RuntimeError: the kernel fell over"):
        job.result(timeout=120)
    chat, _, box = job.outputs()[-1]
    assert box["value"]["text"] == message["text"]  # back in the box, to send again
    assert len(chat) == 2  # the conversation as it was before the broken answer (the first exchange)


# ---------------------------------------------------------------- labeling's status, imports, legends, header


def test_the_status_box_says_how_a_limited_run_ended(launch_app, tmp_path):
    import time

    from fake_openai import FakeOpenAI
    from labeling_images import many

    from lab.labeling.client import LabelerConfig
    from lab.ui.prompt_tab import LABELER_INPUTS

    app, ctx, client = launch_app(model="")
    many(tmp_path / "pics", 5)
    with FakeOpenAI() as server:
        labeler = {
            **{n: getattr(LabelerConfig(), n) for n in LABELER_INPUTS},
            "provider": "",
            "base_url": server.base_url,
            "model": "fake-vl",
        }
        status = client.predict(
            str(tmp_path / "pics"), "limited", "sample_caption", "en", 2, api_name="/label_start", **labeler
        )[0]
        assert status.startswith("Started"), status
        deadline = time.monotonic() + 60
        while not str(ended := client.predict("limited", api_name="/label_progress")[-1]).startswith("finished"):
            assert isinstance(ended, dict) and time.monotonic() < deadline, ended  # unchanged while it runs
            time.sleep(0.2)
    assert ended.startswith("finished: 2 labeled, 0 failed, 0 skipped of 5"), ended


def _lf_export(tmp_path: Path) -> Path:
    """A LLaMA-Factory export of three sample records: data.json, dataset_info.json, images/."""
    from lab.dataset import load_records, write_records
    from lab.formats import export_dataset

    small = tmp_path / "small"
    records = load_records(SAMPLE)[:3]
    (small / "images").mkdir(parents=True)
    for record in records:
        (small / record["images"][0]).write_bytes((SAMPLE / record["images"][0]).read_bytes())
    write_records(small / "data.jsonl", records)
    return export_dataset(small, "llamafactory", tmp_path / "lf")


def test_a_bare_llamafactory_json_says_what_to_upload_and_imports_with_a_zip_of_its_images(launch_app, tmp_path):
    import zipfile

    from gradio_client import handle_file

    app, ctx, client = launch_app(model="")
    data = _lf_export(tmp_path)
    status, _ = client.predict([handle_file(str(data))], "bare", api_name="/dataset_import")
    assert "which is not in the upload; upload the .json together with a .zip of its images" in status, status
    for inside in ("images/", ""):  # a zip of the images folder, or of the pictures alone
        archive = tmp_path / f"images{len(inside)}.zip"
        with zipfile.ZipFile(archive, "w") as z:
            for image in sorted((data.parent / "images").iterdir()):
                z.write(image, f"{inside}{image.name}")
        status, chosen = client.predict(
            [handle_file(str(data)), handle_file(str(archive))], f"with{len(inside)}", api_name="/dataset_import"
        )
        assert status.startswith("All 3 records"), status
        assert len(list((Path(chosen["value"]) / "images").iterdir())) == 3


def test_a_chinese_page_gets_chinese_plot_legends(launch_app, lab_home):
    from gradio_client import Client
    from test_cli_commands import _a_run_with_an_evaluation

    run, summary = _a_run_with_an_evaluation(lab_home)
    app, ctx, _ = launch_app(model="")
    for lang, words in (("en", ({"train", "eval"}, {"base", "tuned"})), ("zh", ({"训练", "验证"}, {"基座", "微调后"}))):
        client = Client(app.local_url, verbose=False, headers={"Accept-Language": lang})
        client.predict(str(run), api_name="/train_show_run")  # the page follows that run
        loss = client.predict(api_name="/train_poll")[2]
        assert {row[2] for row in loss["data"]} == words[0], loss
        chart = client.predict(str(summary), "gain", api_name="/evaluate_load")[3]
        assert {row[1] for row in chart["data"]} == words[1], chart


def test_the_demo_warning_leaves_the_header_once_a_run_is_loaded(launch_app, tiny_models, lora_run_dir):
    app, ctx, client = launch_app(model=str(tiny_models("qwen2_5_vl")))
    _wait_ready(ctx)
    assert "tiny random demo model" in client.predict(api_name="/model_status")
    client.predict(str(lora_run_dir), api_name="/model_load_run")
    _wait_ready(ctx)
    status = client.predict(api_name="/model_status")
    assert "sample-lora" in status and "tiny random demo model" not in status, status
