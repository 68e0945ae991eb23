"""Run folders before a run trains: whose they are, whether they can be written, and the metrics a resume cuts.

Nothing here trains; the runs that do are in test_training_runs.py and test_train_ui.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lab.errors import BusyError, ConfigError, localize
from lab.paths import REPO_ROOT
from lab.train_config import TrainConfig
from lab.training.metrics import METRICS_FILE, append_metrics, cut_metrics, read_metrics
from lab.training.run_folder import RUN_LOCK, check_run_dir, prepare_run_dir
from lab.training.runs import CONFIG_FILE


def finished_run(run_dir, steps: int = 4, checkpoint: int = 2):
    """A run folder as a finished run leaves it: config, metrics, a checkpoint, the adapter."""
    run_dir.mkdir(parents=True)
    TrainConfig(run_name=run_dir.name).to_yaml(run_dir / CONFIG_FILE)
    append_metrics(run_dir, {"event": "start", "step": 0, "total_steps": steps})
    for step in range(1, steps + 1):
        append_metrics(run_dir, {"step": step, "loss": 1.0 / step})
    append_metrics(run_dir, {"event": "end", "step": steps})
    (run_dir / f"checkpoint-{checkpoint}").mkdir()
    (run_dir / f"checkpoint-{checkpoint}" / "trainer_state.json").write_text("{}")
    (run_dir / "adapter_model.safetensors").write_bytes(b"weights")
    return run_dir


def test_a_resume_cuts_the_metrics_back_to_its_checkpoint_atomically(tmp_path):
    run_dir = tmp_path / "run"
    for record in [
        {"event": "start", "step": 0},
        {"step": 1, "loss": 3.0},
        {"step": 2, "loss": 2.0},
        {"step": 2, "eval_loss": 2.5},
        {"step": 3, "loss": 1.5},
        {"event": "error", "message": "x"},
        {"step": 4, "loss": 1.0},
    ]:
        append_metrics(run_dir, record)
    with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as f:
        f.write('{"step": 5, "lo')  # the process was killed in the middle of this line
    cut_metrics(run_dir, 2)
    assert read_metrics(run_dir) == [
        {"event": "start", "step": 0},
        {"step": 1, "loss": 3.0},
        {"step": 2, "loss": 2.0},
        {"step": 2, "eval_loss": 2.5},
    ]
    assert (run_dir / METRICS_FILE).read_text(encoding="utf-8").endswith('"eval_loss": 2.5}\n')
    assert sorted(p.name for p in run_dir.iterdir()) == [METRICS_FILE]  # no temporary file left behind
    cut_metrics(tmp_path / "none", 2)  # a run with no metrics yet: nothing to cut


def test_an_earlier_run_is_reused_only_to_resume_it(lab_home):
    run_dir = finished_run(lab_home / "checkpoints" / "done")
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="A run named done already exists; choose another run_name or resume it."):
        prepare_run_dir(TrainConfig(run_name="done", learning_rate=0.5))
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    assert check_run_dir(TrainConfig(run_name="done"), resume=True) == run_dir
    prepare_run_dir(TrainConfig(run_name="done"), resume=True)  # cuts the metrics back to checkpoint-2
    assert [r.get("step") for r in read_metrics(run_dir)] == [0, 1, 2]
    assert (run_dir / CONFIG_FILE).read_bytes() == before[CONFIG_FILE]


def test_an_attempt_that_never_trained_a_step_may_be_started_again(lab_home):
    run_dir = lab_home / "checkpoints" / "again"
    prepare_run_dir(TrainConfig(run_name="again", learning_rate=0.5))
    append_metrics(run_dir, {"event": "error", "message": "Dataset data/nope not found."})
    prepare_run_dir(TrainConfig(run_name="again", learning_rate=0.25))
    assert TrainConfig.from_yaml(run_dir / CONFIG_FILE).learning_rate == 0.25 and read_metrics(run_dir) == []


def test_a_run_folder_another_process_trains_in_is_refused_untouched(lab_home):
    run_dir = lab_home / "checkpoints" / "busy"
    prepare_run_dir(TrainConfig(run_name="busy"))  # that run is still loading its model: nothing but its config yet
    config = (run_dir / CONFIG_FILE).read_bytes()
    holder = (
        f"from lab.file_lock import FileLock; lock = FileLock({str(run_dir / RUN_LOCK)!r}); "
        "print('held' if lock.acquire() else 'not held', flush=True); input()"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    other = subprocess.Popen(
        [sys.executable, "-c", holder], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert other.stdout.readline() == "held\n"  # the lock the other process's run holds while it trains
        for attempt in (check_run_dir, prepare_run_dir):
            with pytest.raises(BusyError) as refused:
                attempt(TrainConfig(run_name="busy", learning_rate=0.5))
            assert str(refused.value) == (
                "Run busy is being trained by another process; choose another run_name or wait for it to end."
            )
            assert localize(refused.value, "zh") == "训练 busy 正由另一个进程进行；请换一个 run_name，或等它结束。"
        assert (run_dir / CONFIG_FILE).read_bytes() == config
    finally:
        other.communicate("\n", timeout=60)  # that process ends, and the system lets its lock go
    prepare_run_dir(TrainConfig(run_name="busy", learning_rate=0.5))


def test_a_run_folder_that_cannot_be_made_is_one_sentence(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    cfg = TrainConfig(run_name="x", output_dir=str(blocker / "runs"))
    with pytest.raises(ConfigError) as refused:
        check_run_dir(cfg)
    assert str(refused.value) == (
        f"The run folder {blocker / 'runs' / 'x'} cannot be written: {blocker} is not a "
        "writable folder; choose another output_dir."
    )
    assert localize(refused.value, "zh").startswith(f"无法写入训练文件夹 {blocker / 'runs' / 'x'}：")
    with pytest.raises(ConfigError, match="cannot be written"):
        prepare_run_dir(cfg)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_a_read_only_output_folder_is_one_sentence(tmp_path):
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=f"{parent} is not a writable folder; choose another output_dir"):
            prepare_run_dir(TrainConfig(run_name="x", output_dir=str(parent / "runs")))
    finally:
        parent.chmod(0o700)
    assert not (parent / "runs").exists()


def test_the_run_lock_does_not_make_a_folder_a_run(lab_home):
    run_dir = lab_home / "checkpoints" / "locked"
    prepare_run_dir(TrainConfig(run_name="locked"))
    assert sorted(p.name for p in run_dir.iterdir()) == [RUN_LOCK, CONFIG_FILE]
    prepare_run_dir(TrainConfig(run_name="locked"))  # the lock was let go with the preparation
