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
from lab.training.run_folder import prepare_run_dir
from lab.training.runs import latest_checkpoint, list_runs
from lab.training.runs import train_command as cli_line


def test_cli_trains_and_reports_errors_in_one_sentence(tiny_models, lab_home, capsys):
    code = main(
        [
            "train",
            "--preset",
            "cpu_demo",
            "--set",
            f"model={tiny_models('qwen2_5_vl')}",
            "max_steps=2",
            "run_name=cli",
            "val_ratio=0",
        ]
    )
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
    code = main(
        [
            "train",
            "--preset",
            "cpu_demo",
            "--set",
            f"model={tiny_models('qwen2_5_vl')}",
            "run_name=cli",
            f"output_dir={blocker}/runs",
        ]
    )
    captured = capsys.readouterr()
    assert code == 2 and captured.err == (
        f"error: The run folder {blocker}/runs/cli cannot be written: {blocker} is "
        "not a writable folder; choose another output_dir.\n"
    )
    assert "Loading" not in captured.out and not blocker.with_name("runs").exists()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into a read-only folder anyway")
def test_cli_refuses_a_read_only_output_folder(tiny_models, tmp_path, capsys):
    parent = tmp_path / "read-only"
    parent.mkdir()
    parent.chmod(0o500)
    try:
        code = main(
            [
                "train",
                "--preset",
                "cpu_demo",
                "--set",
                f"model={tiny_models('qwen2_5_vl')}",
                "run_name=cli",
                f"output_dir={parent}/runs",
            ]
        )
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
    assert four[four.index("--num_processes") + 1] == "4" and four[-5:] == [
        "-m",
        "lab",
        "train",
        "--resume",
        str(tmp_path),
    ]
    assert four[four.index("--config_file") + 1].endswith("presets/accelerate/multi_gpu.yaml")
    assert deepspeed_config("zero2")["zero_optimization"]["stage"] == 2
    assert deepspeed_config("zero3")["zero_optimization"]["stage"] == 3
    with pytest.raises(ConfigError, match="GPU"):
        run_accelerate(tmp_path, 64, None, threading.Event(), log=lambda _: None)


@pytest.mark.parametrize("stage, zero, offload", [("zero2", 2, False), ("zero3", 3, False), ("zero3_offload", 3, True)])
def test_a_deepspeed_launch_names_its_config_and_every_process_trains_with_it(
    tmp_path, monkeypatch, stage, zero, offload
):
    import json

    import yaml
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    from lab.training.launch import run_deepspeed_config, write_launch_files

    cfg = TrainConfig.from_preset("full", [f"deepspeed={stage}", "num_gpus=4", "run_name=ds", f"output_dir={tmp_path}"])
    run_dir = prepare_run_dir(cfg)
    command = train_command(run_dir, 4, config_file=write_launch_files(run_dir, 4, stage))
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--config_file") + 1] == str(run_dir / "accelerate.yaml")
    assert command[command.index("--num_processes") + 1] == "4"
    assert command[-5:] == ["-m", "lab", "train", "--config", str(run_dir / "config.yaml")]
    launch = yaml.safe_load((run_dir / "accelerate.yaml").read_text())
    assert (launch["distributed_type"], launch["num_processes"]) == ("DEEPSPEED", 4)
    assert launch["deepspeed_config"] == {
        "deepspeed_config_file": str(run_dir / "deepspeed.json"),
        "zero3_init_flag": False,
    }
    # accelerate refuses mixed precision in the launch config next to a DeepSpeed config file.
    assert "mixed_precision" not in launch
    read = load_config_from_file(str(run_dir / "accelerate.yaml"))  # as accelerate launch reads it
    assert read.distributed_type == DistributedType.DEEPSPEED and read.num_processes == 4
    ds = json.loads((run_dir / "deepspeed.json").read_text())
    assert ds == deepspeed_config(stage) and ds["zero_optimization"]["stage"] == zero
    placed = {ds["zero_optimization"].get(key, {}).get("device") for key in ("offload_optimizer", "offload_param")}
    assert placed == ({"cpu"} if offload else {None})
    assert ("optimizer" in ds) == offload  # DeepSpeed's CPU AdamW for the offloaded optimizer state
    # Every process of the launch trains with the run folder's deepspeed.json; outside a launch it is refused.
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert run_deepspeed_config(cfg, run_dir) == str(run_dir / "deepspeed.json")
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ConfigError, match=f"deepspeed {stage} runs only in a launch on several GPUs"):
        run_deepspeed_config(cfg, run_dir)
    plain = train_command(run_dir, 4, config_file=write_launch_files(run_dir, 4))
    assert yaml.safe_load((run_dir / "accelerate.yaml").read_text())["distributed_type"] == "MULTI_GPU"
    assert plain[plain.index("--config_file") + 1] == str(run_dir / "accelerate.yaml")


def _packages(monkeypatch, missing=(), present=()):
    """As if ``missing`` were not installed and ``present`` were (the rest as they are)."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name in missing else real("yaml") if name in present else real(name, *a),
    )


@pytest.mark.parametrize(
    "overrides, missing, present, message",
    [
        (["deepspeed=zero3", "num_gpus=2"], ("deepspeed",), (), "deepspeed: zero3 needs the deepspeed package"),
        (["deepspeed=zero3_offload", "num_gpus=2"], (), ("deepspeed",), "num_gpus is 2 but this machine has 0 GPU(s)"),
        (["num_gpus=2"], (), (), "num_gpus is 2 but this machine has 0 GPU(s)"),
        (
            ["report_to=tensorboard"],
            ("tensorboard", "tensorboardX"),
            (),
            "report_to tensorboard needs the tensorboard package",
        ),
        (["report_to=wandb"], ("wandb",), (), "report_to wandb needs the wandb package"),
    ],
)
def test_what_this_machine_cannot_do_is_refused_before_anything_loads(
    tiny_models, lab_home, capsys, monkeypatch, overrides, missing, present, message
):
    import torch

    from lab.handle import ModelHandle
    from lab.training import job as jobs

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    _packages(monkeypatch, missing, present)
    settings = [f"model={tiny_models('qwen2_5_vl')}", "run_name=refused", *overrides]
    code = main(["train", "--preset", "cpu_demo", "--set", *settings])
    captured = capsys.readouterr()
    assert code == 2 and captured.err.startswith(f"error: {message}") and captured.err.count("\n") == 1
    assert "Loading" not in captured.out and not (lab_home / "checkpoints" / "refused").exists()
    handle = ModelHandle()  # the Train tab's start: the same sentence, before a job or a model
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        jobs.start_training(TrainConfig.from_preset("cpu_demo", settings), handle)
    assert handle.loaded is None and not (lab_home / "checkpoints" / "refused").exists()


def test_deepspeed_on_one_gpu_is_refused_by_the_config():
    with pytest.raises(
        ConfigError, match="deepspeed zero3_offload shards training over several GPUs, but num_gpus is 1"
    ):
        TrainConfig.from_preset("full", ["deepspeed=zero3_offload"])
    with pytest.raises(ConfigError, match="zero3_offload trains with DeepSpeed's own CPU optimizer"):
        TrainConfig.from_preset("lora", ["deepspeed=zero3_offload", "num_gpus=2", "loraplus_lr_ratio=16"])


def test_subprocess_run_writes_the_same_metrics_and_stops_on_request(tiny_models, lab_home):
    cfg = TrainConfig.from_preset(
        "cpu_demo",
        [f"model={tiny_models('qwen2_5_vl')}", "max_steps=400", "run_name=sub", "val_ratio=0", "save_steps=1000"],
    )
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
