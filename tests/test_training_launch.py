"""The train command, "Show command", and training in a subprocess (the multi-GPU path, run here with one process)."""

from __future__ import annotations

import os
import shlex
import sys
import threading
import time

import pytest

from lab.cli import main
from lab.errors import ConfigError
from lab.train_config import TrainConfig
from lab.training.launch import deepspeed_config, run_accelerate, train_command
from lab.training.metrics import last_event, log_rows, read_metrics
from lab.training.runner import prepare_run_dir
from lab.training.runs import latest_checkpoint, list_runs
from lab.training.runs import train_command as cli_line


def test_cli_trains_and_reports_errors_in_one_sentence(tiny_models, lab_home, capsys):
    code = main(["train", "--preset", "cpu_demo", "--set", f"model={tiny_models('qwen2_5_vl')}", "max_steps=2",
                 "run_name=cli", "val_ratio=0"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "step 2/2" in out and "run folder:" in out
    assert [r["step"] for r in log_rows(read_metrics(lab_home / "checkpoints" / "cli"))] == [1, 2]
    assert [info.name for info in list_runs()] == ["cli"]

    code = main(["train", "--preset", "cpu_demo", "--set", "lora_rnak=4"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: unknown setting 'lora_rnak'") and "Traceback" not in err
    code = main(["train", "--preset", "cpu_demo", "--set", "dataset=data/nope", "run_name=bad"])
    err = capsys.readouterr().err
    assert code == 2 and err == "error: Dataset data/nope not found (looked in " + str(lab_home) + ").\n"


def test_cli_refuses_an_output_folder_it_cannot_write_before_loading_the_model(tiny_models, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # a file where a folder should be: unwritable for root too
    code = main(["train", "--preset", "cpu_demo", "--set", f"model={tiny_models('qwen2_5_vl')}", "run_name=cli",
                 f"output_dir={blocker}/runs"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 2 and captured.err == (f"error: The run folder {blocker}/runs/cli cannot be written: {blocker} is "
                                          "not a writable folder; choose another output_dir.\n")  # fmt: skip
    assert "Loading" not in captured.out and not blocker.with_name("runs").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_cli_refuses_a_read_only_output_folder(tiny_models, tmp_path, capsys):
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        code = main(["train", "--preset", "cpu_demo", "--set", f"model={tiny_models('qwen2_5_vl')}", "run_name=cli",
                     f"output_dir={parent}/runs"])  # fmt: skip
    finally:
        parent.chmod(0o700)
    captured = capsys.readouterr()
    assert code == 2 and captured.err.startswith(f"error: The run folder {parent}/runs/cli cannot be written")
    assert "Traceback" not in captured.err and "Loading" not in captured.out


def test_show_command_reproduces_the_config(capsys):
    cfg = TrainConfig.from_preset("lora", ["lora_rank=16", "system=Answer in one sentence.", "lora_targets=[language]"])
    line = cli_line(cfg, "lora")
    assert line.startswith("python -m lab train --preset lora --set ")
    args = shlex.split(line)[3:]
    assert main(args + ["--show-command"]) == 0
    assert capsys.readouterr().out.strip() == line
    overrides = args[args.index("--set") + 1 :]
    assert TrainConfig.from_preset("lora", overrides) == cfg


def test_multi_gpu_command_and_deepspeed_configs(tmp_path):
    one = train_command(tmp_path, 1)
    assert one == [sys.executable, "-m", "lab", "train", "--config", str(tmp_path / "config.yaml")]
    four = train_command(tmp_path, 4, resume=True)
    assert four[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert four[four.index("--num_processes") + 1] == "4" and four[-5:] == ["-m", "lab", "train", "--resume", str(tmp_path)]
    assert four[four.index("--config_file") + 1].endswith("presets/accelerate/multi_gpu.yaml")
    try:
        import deepspeed  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match="needs the deepspeed package"):
            deepspeed_config("zero3")
    else:
        assert deepspeed_config("zero2")["zero_optimization"]["stage"] == 2
        assert deepspeed_config("zero3")["zero_optimization"]["stage"] == 3
    with pytest.raises(ConfigError, match="GPU"):
        run_accelerate(tmp_path, 64, None, threading.Event(), log=lambda _: None)


def test_subprocess_run_writes_the_same_metrics_and_stops_on_request(tiny_models, lab_home):
    cfg = TrainConfig.from_preset("cpu_demo", [f"model={tiny_models('qwen2_5_vl')}", "max_steps=400",
                                               "run_name=sub", "val_ratio=0", "save_steps=1000"])  # fmt: skip
    run_dir = prepare_run_dir(cfg)
    stop, lines = threading.Event(), []
    outcome = {}
    worker = threading.Thread(target=lambda: outcome.update(code=run_accelerate(run_dir, 1, None, stop, lines.append)))
    worker.start()
    deadline = time.time() + 120
    while not log_rows(read_metrics(run_dir)) and time.time() < deadline and worker.is_alive():
        time.sleep(0.2)
    assert log_rows(read_metrics(run_dir)), "\n".join(lines[-20:])
    stop.set()
    worker.join(120)
    assert outcome["code"] == 0, "\n".join(lines[-20:])
    records = read_metrics(run_dir)
    assert last_event(records)["event"] == "stop"
    step = last_event(records)["step"]
    assert 1 <= step < 400 and latest_checkpoint(run_dir).name == f"checkpoint-{step}"
    assert any(line.startswith("step 1/400") for line in lines)  # the subprocess's own log came through
