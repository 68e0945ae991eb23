"""Training inside the app: one background job at a time, on the app's own model.

:func:`start_training` returns at once; the run goes on in a thread that claims the
shared model (``ModelState.TRAINING``), so chat and evaluation answer "busy" meanwhile.
When it ends, the trained model stays loaded: a LoRA run leaves the adapter on the
model under the run's name, a full run leaves the tuned weights. Progress is read from
the run folder's ``metrics.jsonl`` by anyone (a reloaded page finds the job with
:func:`current_job`). With ``num_gpus > 1`` the job runs ``accelerate launch`` in a
subprocess instead (:mod:`lab.training.launch`) and the app's model is not touched.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.errors import BusyError, LabError
from lab.text import Msg, msg_of

_lock = threading.Lock()
_current: "TrainingJob | None" = None
_queue: "list[TrainingJob]" = []  # runs waiting for the current one to end (shared deployments)
# Each state as people read it (its English is the state).
STATE_NAMES = {"new": Msg("new"), "queued": Msg("queued"), "starting": Msg("starting"), "loading": Msg("loading"),
               "running": Msg("running"), "stopping": Msg("stopping"), "finished": Msg("finished"),
               "stopped": Msg("stopped"), "failed": Msg("failed")}


@dataclass
class TrainingJob:
    """A training run going on (or finished) in this process."""

    config: Any
    run_dir: Path
    resume: bool = False
    status: str = "starting"  # queued, starting, loading, running, stopping, finished, stopped, failed
    message: Msg = Msg("")  # the outcome or the failure, in both languages
    started: float = field(default_factory=time.time)
    stop_event: threading.Event = field(default_factory=threading.Event)
    log_lines: list[str] = field(default_factory=list)
    thread: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def active(self) -> bool:
        return self.status in ("queued", "starting", "loading", "running", "stopping")

    def stop(self) -> None:
        """Ask the run to stop after the current step (it saves a checkpoint first); a queued run leaves the queue."""
        with _lock:
            if self.status == "queued" and self in _queue:
                _queue.remove(self)
                self.status = "stopped"
                self.message = Msg("removed from the queue before it started")
                return
        if self.active:
            self.status = "stopping"
            self.stop_event.set()

    def log(self, line: str) -> None:
        self.log_lines.append(line)
        del self.log_lines[:-200]

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the run to end; True when it has."""
        if self.thread is not None:
            self.thread.join(timeout)
        return not self.active


def current_job() -> TrainingJob | None:
    """The job started last in this process (running or not), for a page that reloads."""
    return _current


def start_training(cfg: Any, handle: Any, resume: bool = False, queue: bool | None = None) -> TrainingJob:
    """Start ``cfg`` in a background thread on ``handle``'s model; returns the job at once.

    One run at a time. While one is going on, a new one is refused with one sentence, or,
    with ``queue`` (the default on a shared deployment such as a Space), waits in line with
    status "queued" and starts when the runs before it end. To resume, ``cfg`` is the run's
    saved config (:func:`lab.training.runs.load_run_config`).

    Whatever would stop the run is refused here, not when it starts: a run name in use (by
    a run going on or waiting), the folder of an earlier run unless resuming it, a folder
    that cannot be written. Nothing is written into the run folder until the run starts.
    """
    from lab.paths import restricted
    from lab.training.runner import check_run_dir

    global _current
    queue = restricted() if queue is None else queue
    with _lock:
        running = _current is not None and _current.active
        if running and not queue:
            raise BusyError("A training run ({current_name}) is already going on; stop it or wait for it to end.",
                            current_name=_current.name)
        if not running and cfg.num_gpus <= 1 and handle.state.value in ("loading", "training", "generating"):
            raise BusyError("The model is busy ({value}); try again when it is done.", value=handle.state.value)
        if not cfg.run_name:
            cfg.run_name = _unused_default_name(cfg)
        _refuse_name_in_use(cfg)
        job = TrainingJob(config=cfg, run_dir=check_run_dir(cfg, resume), resume=resume)
        target = _run_multi_gpu if cfg.num_gpus > 1 else _run_in_app
        job.thread = threading.Thread(target=_run_then_next, args=(job, handle, target), name=f"train-{job.name}",
                                      daemon=True)  # fmt: skip
        if running:
            job.status = "queued"
            _queue.append(job)
            return job
        _current = job
    job.thread.start()
    return job


def _jobs_in_use() -> list[TrainingJob]:
    """The run going on and the runs waiting (call with ``_lock`` held)."""
    return [job for job in [_current, *_queue] if job is not None and job.active]


def _refuse_name_in_use(cfg: Any) -> None:
    from lab.training.runs import run_dir_for

    wanted = run_dir_for(cfg).resolve()
    if any(job.run_dir.resolve() == wanted for job in _jobs_in_use()):
        raise BusyError("A run named {run_name} is already going on or waiting in the queue; "
                        "choose another run_name or wait for it to end.", run_name=cfg.run_name)


def _unused_default_name(cfg: Any) -> str:
    """An automatic run name that no run going on, waiting or saved has (two starts in one second differ)."""
    from lab.training.runs import default_run_name, runs_root

    base, root = default_run_name(cfg), runs_root(cfg)
    taken = {job.run_dir.resolve() for job in _jobs_in_use()}
    name, n = base, 1
    while (root / name).resolve() in taken or (root / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def queue_position(job: TrainingJob) -> int:
    """How many runs are ahead of ``job`` (0 when it is not waiting)."""
    with _lock:
        return _queue.index(job) + 1 if job in _queue else 0


def _run_then_next(job: TrainingJob, handle: Any, target) -> None:
    try:
        _wait_for_model(handle)
        target(job, handle)
    finally:
        _start_next()


def _wait_for_model(handle: Any, timeout: float = 600.0) -> None:
    """A queued run starts after a chat answer or an evaluation in progress ends, not in its way."""
    deadline = time.monotonic() + timeout
    while handle.state.value in ("loading", "generating") and time.monotonic() < deadline:
        time.sleep(0.5)


def _start_next() -> None:
    global _current
    with _lock:
        if not _queue:
            return
        job = _queue.pop(0)
        job.status = "starting"
        _current = job
    job.thread.start()


def _run_in_app(job: TrainingJob, handle: Any) -> None:
    from lab.handle import ModelState

    try:
        _ensure_model(job, handle)
        with handle.use(ModelState.TRAINING) as loaded:
            job.status = "running" if not job.stop_event.is_set() else "stopping"
            try:
                result = _train(job, loaded)
            except BaseException:
                _recover(job, handle, loaded)
                raise
            _hand_over(job, handle, loaded, result)
        job.status, job.message = result.status, _outcome(result)
    except LabError as err:
        job.status, job.message = "failed", msg_of(err)
    except Exception as err:  # a bug must not kill the app: report it in one line
        job.status = "failed"
        job.message = Msg("Training failed: {err_type}: {err}", err_type=type(err).__name__, err=err)
    job.log(str(job.message))


def _outcome(result: Any) -> Msg:
    """``finished at step 40, loss 0.1234``."""
    loss = Msg(", loss {loss:.4f}", loss=result.loss) if result.loss is not None else Msg("")
    return Msg("{status} at step {step}{loss}", status=STATE_NAMES.get(result.status, result.status), step=result.step,
               loss=loss)


def _train(job: TrainingJob, loaded: Any):
    from lab.training.runner import run_training

    return run_training(job.config, loaded=loaded, stop=job.stop_event, resume=job.resume, log=job.log,
                        echo_metrics=False)  # fmt: skip


def _ensure_model(job: TrainingJob, handle: Any) -> None:
    """Load the run's model into the handle unless it is already there, with the right quantization."""
    from lab.handle import resolve_model_name
    from lab.training.runner import load_options

    cfg = job.config
    want = f"{cfg.quant_bits}bit" if cfg.method == "qlora" else None
    loaded = handle.loaded
    if loaded is not None and _same_model(loaded.name, resolve_model_name(cfg.model)) and (loaded.quantization or None) == want:
        return
    job.status = "loading"
    job.log(f"Loading {cfg.model} ...")
    from lab.models import resolve_device

    options = load_options(cfg, resolve_device("auto"))
    handle.load(cfg.model, **{k: v for k, v in options.items() if k != "device"})


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def _hand_over(job: TrainingJob, handle: Any, loaded: Any, result: Any) -> None:
    """Leave the trained model loaded: the adapter under the run's name, or the full model as the run."""
    from lab.training.setup import ADAPTER, finish_model

    if result.is_peft:
        from lab.handle import attach_adapter

        attach_adapter(loaded, result.run_dir, job.name)  # loads the saved adapter under the run's name
        if ADAPTER in loaded.model.peft_config:
            loaded.model.delete_adapter(ADAPTER)
    else:
        loaded.name, loaded.adapter = str(result.run_dir), None
    finish_model(loaded.model)
    handle.run_dir = result.run_dir
    handle.adapter_enabled = True


def _recover(job: TrainingJob, handle: Any, loaded: Any) -> None:
    """After a failed run: adapters come off; weights a full run changed halfway are dropped."""
    from lab.training.setup import finish_model, unwrap_adapters

    if job.config.method == "full":
        handle.loaded = None  # half-trained weights must not pass for the base model
        handle.last_error = Msg("The model was unloaded because a full fine-tuning run failed halfway; load it again.")
        return
    loaded.model = unwrap_adapters(loaded.model)
    finish_model(loaded.model)


def _run_multi_gpu(job: TrainingJob, handle: Any) -> None:
    from lab.training.launch import run_accelerate
    from lab.training.runner import prepare_run_dir

    try:
        prepare_run_dir(job.config, job.resume)  # the subprocess trains from the config written here
        job.status = "running"
        code = run_accelerate(job.run_dir, job.config.num_gpus, job.config.deepspeed, job.stop_event, log=job.log,
                              resume=job.resume)  # fmt: skip
        if code != 0:
            raise LabError("The multi-GPU run ended with exit code {code}; see the log for why.", code=code)
        job.status = "stopped" if job.stop_event.is_set() else "finished"
        job.message = Msg("{status}; the model is in {run_dir}", status=STATE_NAMES[job.status], run_dir=job.run_dir)
    except LabError as err:
        job.status, job.message = "failed", msg_of(err)
    except OSError as err:  # a LabError (ConfigError included) is caught above with its own sentence
        job.status = "failed"
        job.message = Msg("Could not start the multi-GPU run: {err}", err=err)
    job.log(str(job.message))
