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
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import yaml

from lab.errors import ConfigError
from lab.paths import PRESETS_DIR, REPO_ROOT
from lab.training.runs import CONFIG_FILE


def accelerate_dir() -> Path:
    return PRESETS_DIR / "accelerate"


def deepspeed_config(stage: str) -> dict:
    """The DeepSpeed config of ``stage`` (``zero2`` or ``zero3``) from ``presets/accelerate/``."""
    if importlib.util.find_spec("deepspeed") is None:
        raise ConfigError("deepspeed: {stage} needs the deepspeed package (pip install deepspeed); "
                          "set deepspeed to null to train with plain multi-GPU instead.", stage=stage)  # fmt: skip
    path = accelerate_dir() / f"{stage}.yaml"
    if not path.is_file():
        raise ConfigError("No DeepSpeed config {path_name} in {accelerate_dir}.",
                          path_name=path.name, accelerate_dir=accelerate_dir())
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def train_command(run_dir: str | Path, num_gpus: int, resume: bool = False) -> list[str]:
    """The command that trains the run in ``run_dir``: plain Python on one GPU, ``accelerate launch`` on several."""
    run_dir = Path(run_dir)
    lab_args = ["-m", "lab", "train"] + (["--resume", str(run_dir)] if resume else ["--config", str(run_dir / CONFIG_FILE)])
    if num_gpus <= 1:
        return [sys.executable, *lab_args]
    return [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(accelerate_dir() / "multi_gpu.yaml"),
        "--num_processes", str(num_gpus), "--num_machines", "1", "--dynamo_backend", "no",
        *lab_args,
    ]  # fmt: skip


def run_accelerate(run_dir: str | Path, num_gpus: int, deepspeed: str | None, stop: threading.Event,
                   log: Callable[[str], None] = print, resume: bool = False, grace_s: float = 120.0) -> int:
    """Train the prepared run in a subprocess until it ends or ``stop`` is set; returns its exit code."""
    if num_gpus > 1:
        _check_gpus(num_gpus)
    if deepspeed:
        deepspeed_config(deepspeed)  # refuse a missing package before starting anything
    command = train_command(run_dir, num_gpus, resume)
    log("$ " + " ".join(command))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               start_new_session=True, env=env, cwd=str(REPO_ROOT))  # fmt: skip
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
        raise ConfigError("num_gpus is {num_gpus} but this machine has {have} GPU(s); lower num_gpus.",
                          num_gpus=num_gpus, have=have)


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


def stop_process_tree(process: subprocess.Popen, grace_s: float, log: Callable[[str], None] = print,
                      launcher: bool = False) -> None:
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
