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
    return json.dumps({"id": str(n), "images": [], "messages": [
        {"role": "user", "content": "Say hi."}, {"role": "assistant", "content": "hi"}]}) + "\n"


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
    assert shown["value"] == str(found["good"]), shown
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
