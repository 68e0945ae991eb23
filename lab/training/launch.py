"""Training in a subprocess: ``python -m lab train`` on one GPU, ``accelerate launch`` on several.

The run folder is prepared first (its ``config.yaml`` written), and every process
trains from that file, so all ranks agree on the run's name and settings. The
subprocess writes the same ``metrics.jsonl`` as a run in the app, so the same plot
shows it. Stopping sends SIGTERM to the training processes; each finishes its step,
saves and exits (the ranks agree on the step, see :mod:`lab.training.trainer`). Whatever
is still alive after a grace period is killed, the whole process tree with it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from lab.errors import ConfigError
from lab.paths import PRESETS_DIR, REPO_ROOT
from lab.training.runs import CONFIG_FILE

if TYPE_CHECKING:
    from lab.train_config import TrainConfig


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def training_device() -> str:
    """``cuda:<local rank>`` under a multi-GPU launch, else the lab's usual choice."""
    from lab.models import resolve_device

    if "LOCAL_RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return resolve_device("auto")


DEEPSPEED_FILE = "deepspeed.json"  # the DeepSpeed config a run on several GPUs trains with
LAUNCH_FILE = "accelerate.yaml"  # the accelerate launch config it was started with


def accelerate_dir() -> Path:
    return PRESETS_DIR / "accelerate"


def check_deepspeed_package(stage: str) -> None:
    """Refuse a DeepSpeed stage when the deepspeed package is missing."""
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError(
            "deepspeed: {stage} needs the deepspeed package (pip install deepspeed); "
            "set deepspeed to null to train with plain multi-GPU instead.",
            stage=stage,
        )


def deepspeed_config(stage: str) -> dict:
    """The DeepSpeed config of ``stage`` (``zero2``, ``zero3``, ``zero3_offload``) from ``presets/accelerate/``."""
    path = accelerate_dir() / f"{stage}.yaml"
    if not path.is_file():
        raise ConfigError(
            "No DeepSpeed config {path_name} in {accelerate_dir}.", path_name=path.name, accelerate_dir=accelerate_dir()
        )
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def write_launch_files(run_dir: str | Path, num_gpus: int, deepspeed: str | None = None) -> Path:
    """The ``accelerate launch`` config of a run on several GPUs, written into its folder; returns its path.

    It is ``multi_gpu.yaml`` for ``num_gpus`` processes; with a DeepSpeed stage it launches
    DeepSpeed, whose config (``deepspeed.json``, from the stage's preset) is written beside it and
    is the one every process trains with (:func:`run_deepspeed_config`): the
    run folder keeps exactly what was launched.
    """
    run_dir = Path(run_dir)
    launch = yaml.safe_load((accelerate_dir() / "multi_gpu.yaml").read_text(encoding="utf-8"))
    launch["num_processes"] = num_gpus
    if deepspeed:
        ds_file = run_dir / DEEPSPEED_FILE
        ds_file.write_text(json.dumps(deepspeed_config(deepspeed), indent=2) + "\n", encoding="utf-8")
        launch["distributed_type"] = "DEEPSPEED"
        # accelerate refuses a launch config that sets mixed precision next to a DeepSpeed config
        # file (the file's bf16/fp16 "auto" decides, filled in by the Trainer).
        launch.pop("mixed_precision", None)
        # The weights are loaded before the Trainer starts DeepSpeed, which then partitions them.
        launch["deepspeed_config"] = {"deepspeed_config_file": str(ds_file), "zero3_init_flag": False}
    path = run_dir / LAUNCH_FILE
    path.write_text(yaml.safe_dump(launch, sort_keys=False), encoding="utf-8")
    return path


def run_deepspeed_config(cfg: TrainConfig, run_dir: Path) -> str | dict | None:
    """The DeepSpeed config this process trains with: the run folder's ``deepspeed.json``, which the launch
    wrote (:func:`write_launch_files`), else the stage's preset.

    DeepSpeed shards over the processes of a multi-GPU launch; a run with ``deepspeed`` that is not
    in one is refused rather than trained without it.
    """
    if not cfg.deepspeed:
        return None
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        raise ConfigError(
            "deepspeed {stage} runs only in a launch on several GPUs; start the run with "
            "python -m lab train (num_gpus 2 or more) or from the Train tab.",
            stage=cfg.deepspeed,
        )
    written = run_dir / DEEPSPEED_FILE
    return str(written) if written.is_file() else deepspeed_config(cfg.deepspeed)


def train_command(
    run_dir: str | Path, num_gpus: int, resume: bool = False, config_file: str | Path | None = None
) -> list[str]:
    """The command that trains the run in ``run_dir``: plain Python on one GPU, ``accelerate launch`` on several
    (with ``config_file``, from :func:`write_launch_files`, else ``multi_gpu.yaml``)."""
    run_dir = Path(run_dir)
    lab_args = ["-m", "lab", "train"] + (
        ["--resume", str(run_dir)] if resume else ["--config", str(run_dir / CONFIG_FILE)]
    )
    if num_gpus <= 1:
        return [sys.executable, *lab_args]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config_file or accelerate_dir() / "multi_gpu.yaml"),
        "--num_processes",
        str(num_gpus),
        "--num_machines",
        "1",
        "--dynamo_backend",
        "no",
        *lab_args,
    ]


def run_accelerate(
    run_dir: str | Path,
    num_gpus: int,
    deepspeed: str | None,
    stop: threading.Event,
    log: Callable[[str], None] = print,
    resume: bool = False,
    grace_s: float = 120.0,
) -> int:
    """Train the prepared run in a subprocess until it ends or ``stop`` is set; returns its exit code."""
    if num_gpus > 1:
        _check_gpus(num_gpus)
    if deepspeed:
        check_deepspeed_package(deepspeed)  # refuse a missing package before starting anything
    config_file = write_launch_files(run_dir, num_gpus, deepspeed) if num_gpus > 1 else None
    command = train_command(run_dir, num_gpus, resume, config_file)
    log("$ " + " ".join(command))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
        env=env,
        cwd=str(REPO_ROOT),
    )
    reader = threading.Thread(target=_forward_output, args=(process, log), daemon=True)
    reader.start()
    while process.poll() is None:
        if stop.wait(0.5):
            stop_process_tree(process, grace_s, log, launcher=num_gpus > 1)
            break
    code = process.wait()
    reader.join(5)
    return code


def _check_gpus(num_gpus: int) -> None:
    import torch

    have = torch.cuda.device_count()
    if have < num_gpus:
        raise ConfigError(
            "num_gpus is {num_gpus} but this machine has {have} GPU(s); lower num_gpus.", num_gpus=num_gpus, have=have
        )


def _forward_output(process: subprocess.Popen, log: Callable[[str], None]) -> None:
    for line in process.stdout:
        log(line.rstrip("\n"))


def _children(pid: int) -> list[int]:
    try:
        import psutil

        return [child.pid for child in psutil.Process(pid).children()]
    except Exception:  # psutil missing, or the process is gone already
        return []


def _descendants(pid: int) -> list[int]:
    try:
        import psutil

        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except Exception:  # psutil missing, or the process is gone already
        return []


def stop_process_tree(
    process: subprocess.Popen, grace_s: float, log: Callable[[str], None] = print, launcher: bool = False
) -> None:
    """SIGTERM the training processes (they save and exit); after ``grace_s``, SIGKILL the whole tree.

    ``launcher``: ``process`` is ``accelerate launch``, whose children are the ranks.
    """
    # torchrun puts each rank in a session of its own, so the launcher's process group does
    # not reach them: signal the ranks (the launcher's children; their own children are data
    # loader workers, which must not be killed mid-step) or the lone process itself.
    workers = (_children(process.pid) if launcher else []) or [process.pid]
    log(f"Stopping: asking {len(workers)} training process(es) to finish their step and save ...")
    for pid in workers:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.5)
    if process.poll() is None:
        log("The training processes did not stop in time; killing them.")
        for pid in _descendants(process.pid) + [process.pid]:
            _signal(pid, signal.SIGKILL)
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
