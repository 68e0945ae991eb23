"""The run folder: whether a run may use it, and claiming it for one.

A fresh run needs a folder that holds no other run (an attempt that failed before its first
step may be reused); resuming needs a checkpoint. The folder must be writable, and no other
process may be training in it: the one that trains holds :data:`RUN_LOCK`. Claiming writes
the resolved config into a fresh folder, or cuts ``metrics.jsonl`` back to the checkpoint
a resumed run starts from.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from lab.errors import BusyError, ConfigError
from lab.file_lock import FileLock, locked_elsewhere
from lab.training.fit import resolve_auto
from lab.training.launch import is_main_process, training_device
from lab.training.metrics import METRICS_FILE, cut_metrics, log_rows, read_metrics
from lab.training.runs import CONFIG_FILE, default_run_name, latest_checkpoint, run_dir_for

if TYPE_CHECKING:
    from lab.train_config import TrainConfig

RUN_LOCK = ".training.lock"  # held by the process training in the run folder
# What a run that failed before its first step may leave: its folder can be used again.
ATTEMPT_FILES = (
    CONFIG_FILE,
    METRICS_FILE,
    RUN_LOCK,
    "data_mix.json",
    "deepspeed.json",
    "accelerate.yaml",
    "runs",
    "wandb",
)


def check_run_dir(cfg: TrainConfig, resume: bool = False) -> Path:
    """The run folder ``cfg`` trains in, if it may; refused with one sentence before anything is written or loaded.

    A fresh run needs a folder that holds no other run (an attempt that failed before its
    first step may be reused); resuming needs a checkpoint. Either way the folder must be
    writable and no other process may be training in it. Names a run without one.
    """
    run_dir = _usable_run_dir(cfg, resume)
    if locked_elsewhere(run_dir / RUN_LOCK):
        raise _in_use(cfg.run_name)
    return run_dir


def claim_run_dir(cfg: TrainConfig, resume: bool = False) -> tuple[Path, FileLock | None]:
    """Check the run folder (:func:`check_run_dir`), lock it and prepare it: ``(run_dir, lock)``.

    The lock keeps every other process out until it is released. Preparing writes the
    resolved config (fresh) or cuts ``metrics.jsonl`` back to the checkpoint (resumed).
    Only the main process of a multi-GPU launch does this; the others get the folder.
    """
    from lab.training.data import check_datasets

    check_datasets(cfg)  # a missing or empty dataset leaves no run folder behind
    if not is_main_process():
        if not cfg.run_name:
            cfg.run_name = default_run_name(cfg)
        return run_dir_for(cfg), None
    run_dir = _usable_run_dir(cfg, resume)
    lock = FileLock(run_dir / RUN_LOCK)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if not lock.acquire():
            raise _in_use(cfg.run_name)
        _usable_run_dir(cfg, resume)  # again, under the lock: another process may have trained here meanwhile
        if resume:
            cut_metrics(run_dir, _step_of(latest_checkpoint(run_dir)))
        else:
            (run_dir / METRICS_FILE).unlink(missing_ok=True)  # left by an attempt that failed before its first step
            cfg.to_yaml(run_dir / CONFIG_FILE)
    except OSError as err:
        lock.release()
        raise ConfigError(
            "The run folder {run_dir} cannot be written ({strerror}); choose another output_dir.",
            run_dir=run_dir,
            strerror=err.strerror or err,
        ) from None
    except BaseException:
        lock.release()
        raise
    return run_dir, lock


def prepare_run_dir(cfg: TrainConfig, resume: bool = False) -> Path:
    """Create (or, to resume, find) the run folder and write the resolved config into it, for a
    run that trains in another process (which claims the folder again, see :func:`claim_run_dir`)."""
    if not resume and is_main_process():
        resolve_auto(cfg, training_device(), lambda line: None)
    run_dir, lock = claim_run_dir(cfg, resume)
    if lock is not None:
        lock.release()
    return run_dir


def _usable_run_dir(cfg: TrainConfig, resume: bool) -> Path:
    if not cfg.run_name:
        cfg.run_name = default_run_name(cfg)
    run_dir = run_dir_for(cfg)
    _check_writable(run_dir)
    if resume:
        if latest_checkpoint(run_dir) is None:
            raise ConfigError(
                "Run {run_name} has no checkpoint to resume from; start it again instead.", run_name=cfg.run_name
            )
    elif _holds_a_run(run_dir):
        raise ConfigError(
            "A run named {run_name} already exists; choose another run_name or resume it.", run_name=cfg.run_name
        )
    return run_dir


def _holds_a_run(run_dir: Path) -> bool:
    """Whether ``run_dir`` holds anything but what an attempt that never trained a step leaves."""
    if not run_dir.is_dir():
        return False
    if any(p.name not in ATTEMPT_FILES for p in run_dir.iterdir()):
        return True
    records = read_metrics(run_dir)
    return bool(log_rows(records)) or any(r.get("event") in ("end", "stop") for r in records)


def _check_writable(run_dir: Path) -> None:
    """Refuse a run folder that cannot be made or written: a read-only folder or a file in the way."""
    existing = run_dir
    while not os.path.exists(existing) and existing.parent != existing:  # os.path: False where it may not look
        existing = existing.parent
    if not os.path.isdir(existing) or not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(
            "The run folder {run_dir} cannot be written: {existing} is not a writable folder; "
            "choose another output_dir.",
            run_dir=run_dir,
            existing=existing,
        )


def _in_use(name: str) -> BusyError:
    return BusyError(
        "Run {name} is being trained by another process; choose another run_name or wait for it to end.", name=name
    )


def _step_of(checkpoint: Path) -> int:
    return int(checkpoint.name.rsplit("-", 1)[1])
