"""Training inside the app: one background job at a time, on the app's own model.

:func:`start_training` returns at once; the run goes on in a thread that claims the
shared model (``ModelState.TRAINING``), so chat and evaluation answer "busy" meanwhile.
When it ends, the trained model stays loaded: a LoRA run leaves the adapter on the
model under the run's name (the base weights under it as they were loaded), a full run leaves
its tuned weights, loaded as the run. Progress is read from
the run folder's ``metrics.jsonl`` by anyone (a reloaded page finds the job with
:func:`current_job`). With ``num_gpus > 1`` the job runs ``accelerate launch`` in a
subprocess instead (:mod:`lab.training.launch`) and the app's model is not touched.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lab.errors import BusyError, LabError
from lab.jobs import Job, JobQueue, JobState
from lab.text import Msg
from lab.training.runner import TRAINING

if TYPE_CHECKING:
    from lab.train_config import TrainConfig

_turns = JobQueue()  # one run at a time; later runs wait in line (shared deployments)


class TrainingJob(Job):
    """A training run going on (or finished) in this process: a :class:`Job` with its config and folder."""

    def __init__(self, config: Any, run_dir: Path, resume: bool = False):
        super().__init__(run_dir.name, TRAINING)
        self.config = config
        self.run_dir = run_dir
        self.resume = resume

    @property
    def status(self) -> JobState:
        """The job's state, under the name a run folder's status has (:func:`lab.training.runs.describe_run`)."""
        return self.state


def current_job() -> TrainingJob | None:
    """The job started last in this process (running or not), for a page that reloads."""
    return _turns.current


def start_training(cfg: TrainConfig, handle: Any, resume: bool = False, queue: bool | None = None) -> TrainingJob:
    """Start ``cfg`` in a background thread on ``handle``'s model; returns the job at once.

    One run at a time. While one is going on, a new one is refused with one sentence, or,
    with ``queue`` (the default on a shared deployment such as a Space), waits in line with
    state ``queued`` and starts when the runs before it end. To resume, ``cfg`` is the run's
    saved config (:func:`lab.training.runs.load_run_config`).

    Whatever would stop the run is refused here, not when it starts: a run name in use (by
    a run going on or waiting), the folder of an earlier run unless resuming it, a folder
    that cannot be written. Nothing is written into the run folder until the run starts.
    """
    from lab.model_sources import check_trust
    from lab.paths import restricted
    from lab.training.preflight import check_run_environment
    from lab.training.run_folder import check_run_dir

    queue = restricted() if queue is None else queue
    check_trust(cfg.trust_remote_code)  # refused on a shared server now, not when the run loads its model
    check_run_environment(cfg)  # a wrong path, a missing package, too few GPUs: one sentence now, not a failed run
    with _turns.lock:
        running = _turns.busy()
        if running and not queue:
            raise BusyError(
                "A training run ({current_name}) is already going on; stop it or wait for it to end.",
                current_name=_turns.current.name,
            )
        if not running and cfg.num_gpus <= 1 and handle.state.value in ("loading", "training", "generating"):
            raise BusyError("The model is busy ({value}); try again when it is done.", value=handle.state.value)
        if not cfg.run_name:
            cfg.run_name = _unused_default_name(cfg)
        _refuse_name_in_use(cfg)
        job = TrainingJob(cfg, check_run_dir(cfg, resume), resume)
        target = _run_multi_gpu if cfg.num_gpus > 1 else _run_in_app
        return _turns.submit(job, lambda job: _wait_then(job, handle, target))


def _jobs_in_use() -> list[Job]:
    """The run going on and the runs waiting."""
    return _turns.jobs()


def _refuse_name_in_use(cfg: TrainConfig) -> None:
    from lab.training.runs import run_dir_for

    wanted = run_dir_for(cfg).resolve()
    if any(job.run_dir.resolve() == wanted for job in _jobs_in_use()):
        raise BusyError(
            "A run named {run_name} is already going on or waiting in the queue; "
            "choose another run_name or wait for it to end.",
            run_name=cfg.run_name,
        )


def _unused_default_name(cfg: TrainConfig) -> str:
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
    return _turns.position(job)


def _wait_then(job: TrainingJob, handle: Any, target) -> None:
    _wait_for_model(handle)
    target(job, handle)


def _wait_for_model(handle: Any, timeout: float = 600.0) -> None:
    """A queued run starts after a chat answer or an evaluation in progress ends, not in its way."""
    deadline = time.monotonic() + timeout
    while handle.state.value in ("loading", "generating") and time.monotonic() < deadline:
        time.sleep(0.5)


def _run_in_app(job: TrainingJob, handle: Any) -> None:
    from lab.handle import ModelState

    _ensure_model(job, handle)
    with handle.use(ModelState.TRAINING) as loaded:
        job.mark_running()
        try:
            result = _train(job, loaded)
        except BaseException:
            _recover(job, handle, loaded)
            raise
        _hand_over(job, handle, loaded, result)
    job.finish(JobState(result.status), _outcome(result))


def _outcome(result: Any) -> Msg:
    """``finished at step 40, loss 0.1234``."""
    loss = Msg(", loss {loss:.4f}", loss=result.loss) if result.loss is not None else Msg("")
    return Msg("{status} at step {step}{loss}", status=JobState(result.status).label, step=result.step, loss=loss)


def _train(job: TrainingJob, loaded: Any):
    from lab.training.runner import run_training

    return run_training(
        job.config, loaded=loaded, stop=job.stop_event, resume=job.resume, log=job.log, echo_metrics=False
    )


def _ensure_model(job: TrainingJob, handle: Any) -> None:
    """Load the run's model into the handle unless it is already there, with the right quantization."""
    from lab.handle import resolve_model_name, same_model
    from lab.training.runner import load_options

    cfg = job.config
    want = f"{cfg.quant_bits}bit" if cfg.method == "qlora" else None
    loaded = handle.loaded
    same = loaded is not None and same_model(loaded.name, resolve_model_name(cfg.model))
    if same and (loaded.quantization or None) == want:
        return
    job.set_phase(JobState.LOADING)
    job.log(f"Loading {cfg.model} ...")
    from lab.models import resolve_device

    options = load_options(cfg, resolve_device("auto"))
    handle.load(cfg.model, **{k: v for k, v in options.items() if k != "device"})


def _hand_over(job: TrainingJob, handle: Any, loaded: Any, result: Any) -> None:
    """Leave the trained model loaded: the adapter under the run's name, or the full model as the run."""
    from lab.training.setup import ADAPTER, finish_model

    if result.is_peft:
        from lab.handle import attach_adapter

        attach_adapter(loaded, result.run_dir, job.name)  # loads the saved adapter under the run's name
        if ADAPTER in loaded.model.peft_config:
            loaded.model.delete_adapter(ADAPTER)
    else:
        # A full run trained the loaded weights themselves. A spare copy of the base would double the memory and
        # reloading the base would put the result away, so the run's weights stay loaded under the run's name: the
        # header says "run X, fully fine-tuned from BASE", and a later run on the base model loads it again.
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
    from lab.training.run_folder import prepare_run_dir

    try:
        prepare_run_dir(job.config, job.resume)  # the subprocess trains from the config written here
        job.mark_running()
        code = run_accelerate(
            job.run_dir, job.config.num_gpus, job.config.deepspeed, job.stop_event, log=job.log, resume=job.resume
        )
    except OSError as err:  # a LabError (ConfigError included) keeps its own sentence
        raise LabError("Could not start the multi-GPU run: {err}", err=err) from None
    if code != 0:
        raise LabError("The multi-GPU run ended with exit code {code}; see the log for why.", code=code)
    state = JobState.STOPPED if job.stop_event.is_set() else JobState.FINISHED
    job.finish(state, Msg("{status}; the model is in {run_dir}", status=state.label, run_dir=job.run_dir))
