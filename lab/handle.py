"""The one owner of the loaded model.

Every part of the app (training, evaluation, chat, labeling with the local model) goes
through a :class:`ModelHandle`. A job claims the model with :meth:`ModelHandle.use`;
while one job holds it, another is refused at once with a :class:`BusyError` that
says why, instead of waiting on the GPU or corrupting the weights.

The loaded model may carry LoRA adapters (a PEFT model): one per run, named after the
run, one of them active. :meth:`ModelHandle.generating` turns the adapter off for one
request (PEFT's ``disable_adapter()``), so "base vs fine-tuned" needs no second copy
of the weights and no reload.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from enum import Enum
from pathlib import Path
from typing import Any

from lab.errors import BusyError, LabError, ModelLoadError
from lab.jobs import Job, JobState, start_job
from lab.paths import restricted
from lab.text import Msg, msg_of
from lab.train_config import DEMO_MODEL
from lab.training.runs import CONFIG_FILE, RunFolder, find_run, peft_adapter_name


class ModelState(str, Enum):
    EMPTY = "empty"
    LOADING = "loading"
    READY = "ready"
    TRAINING = "training"
    GENERATING = "generating"

    @property
    def label(self) -> Msg:
        """The state as the header shows it (its English is the value)."""
        return _STATE_NAMES[self.value]


_STATE_NAMES = {
    "empty": Msg("empty"),
    "loading": Msg("loading"),
    "ready": Msg("ready"),
    "training": Msg("training"),
    "generating": Msg("generating"),
}

_BUSY = {
    ModelState.LOADING: Msg("a model is being loaded"),
    ModelState.TRAINING: Msg("a training run is using the model"),
    ModelState.GENERATING: Msg("the model is answering another request"),
}


LOADING_THE_MODEL = Msg("Loading the model")  # what failed, when a load fails


def _busy_error(state: ModelState) -> BusyError:
    return BusyError("The model is busy: {busy}; try again when it is done.", busy=_BUSY[state])


class ModelHandle:
    """Holds the loaded model (a :class:`lab.models.LoadedModel`) and its state."""

    def __init__(self) -> None:
        self._guard = threading.Lock()  # held only to read or change the state
        self._state = ModelState.EMPTY
        self.loaded: Any = None
        self.last_error: Msg | None = None  # both languages: the header shows the page's
        self.error_owner: str | None = None  # the visitor whose request failed (None: anyone may see it)
        self._requester = threading.local()  # .owner: the visitor a background load works for
        self.run_dir: Path | None = None  # the run folder the model or its adapter came from
        self.adapter_enabled = True  # what a request that does not say gets
        self.download: tuple[int, int] | None = None  # (bytes done, bytes in all) of the model being downloaded

    def record_error(self, err: LabError | Msg) -> None:
        with self._guard:  # the sentence and whom it belongs to change together
            self.last_error, self.error_owner = msg_of(err), getattr(self._requester, "owner", None)

    @property
    def state(self) -> ModelState:
        return self._state

    def _claim(self, new_state: ModelState, need_model: bool) -> None:
        with self._guard:
            if self._state in _BUSY:
                raise _busy_error(self._state)
            if need_model and self.loaded is None:
                raise LabError("No model is loaded yet; load one first.")
            self._previous = self._state
            self._state = new_state

    def _release(self) -> None:
        with self._guard:
            self._state = ModelState.READY if self.loaded is not None else ModelState.EMPTY

    @contextmanager
    def use(self, purpose: ModelState = ModelState.GENERATING) -> Iterator[Any]:
        """Claim the loaded model for a job (generating or training) and yield it."""
        self._claim(purpose, need_model=True)
        try:
            yield self.loaded
        finally:
            self._release()

    def load(self, name_or_path: str, **options: Any) -> Any:
        """Load a model (replacing the current one) in the calling thread."""
        from lab.models import load_model

        self._claim(ModelState.LOADING, need_model=False)
        try:
            self.loaded, self.run_dir = None, None
            free_accelerator_memory()
            self.loaded = load_model(resolve_model_name(name_or_path), **self._with_progress(options))
            self.last_error = None
        except LabError as err:
            self.record_error(err)
            raise
        finally:
            self.download = None
            self._release()
        return self.loaded

    def _with_progress(self, options: dict) -> dict:
        """``options`` with a download progress callback that the header reads (:attr:`download`)."""

        def progress(done: int, total: int) -> None:
            self.download = (done, total)

        return {"progress": progress, **options}

    def load_in_background(
        self, name_or_path: str | None, run: str | None = None, owner: str | None = None, **options: Any
    ) -> Job:
        """Start :meth:`load` (or :meth:`load_run` when ``run`` is given) as a background job; returns the job.

        A model that is busy is refused at once (BusyError); a failure ends up in
        ``last_error`` too, which the app's header shows; on a shared deployment only to ``owner``
        (the visitor who asked), since the sentence repeats what they typed.
        """
        with self._guard:
            if self._state in _BUSY:
                raise _busy_error(self._state)
        from lab.model_sources import check_model_source, check_trust

        check_trust(options.get("trust_remote_code", False))  # a shared server refuses it at once
        if run:
            find_run(run)  # a run that is not there (or not allowed) is refused at once, not in the background
        elif name_or_path and name_or_path != DEMO_MODEL:
            check_model_source(name_or_path)  # likewise a folder that is not a model, or a model not allowed

        def work(job: Job) -> None:
            self._requester.owner = owner
            job.mark_running()
            self.load_model_or_run(name_or_path, run, **options)  # the model is the handle's, not the job's

        def then() -> None:
            if job.state is JobState.FAILED:
                self.record_error(job.message)  # shown in the header

        job = Job("model-load", LOADING_THE_MODEL)
        return start_job(work, job, then=then)

    def unload(self) -> None:
        """Forget the loaded model and free its memory."""
        self._claim(ModelState.LOADING, need_model=False)
        try:
            self.loaded, self.run_dir = None, None
            free_accelerator_memory()
        finally:
            self._release()

    def load_run(self, run_dir: str | Path, base: str | None = None, **options: Any) -> Any:
        """Load a training run: its base model plus its LoRA adapter, or its fully fine-tuned weights.

        ``base`` replaces the base model the run names (the same model in another folder).
        When the base model is already loaded (with the same quantization) the adapter is
        added to it and made active, without reloading the base. ``options`` go to
        :func:`lab.models.load_model`; the run's ``min_pixels``/``max_pixels`` are the default.
        """
        from lab.models import load_model

        run = RunFolder.read(find_run(run_dir))
        if base:
            run.config = {**run.config, "model": base}
        options = {"min_pixels": run.min_pixels, "max_pixels": run.max_pixels, **options}
        self._claim(ModelState.LOADING, need_model=False)
        try:
            if run.adapter_dir is None:
                self.loaded = None
                free_accelerator_memory()
                self.loaded = load_model(str(run.model_dir), **options)
            else:
                if not self._holds_base(run, options.get("quantization")):
                    self.loaded = None
                    free_accelerator_memory()
                    self.loaded = load_model(resolve_model_name(run.base_model), **self._with_progress(options))
                attach_adapter(self.loaded, run.adapter_dir, run.name)
            self.run_dir, self.last_error = run.path, None
        except LabError as err:
            self.record_error(err)
            raise
        finally:
            self.download = None
            self._release()
        return self.loaded

    def load_model_or_run(self, model: str | None = None, run: str | None = None, **options: Any) -> Any:
        """What the CLI's ``--model M [--adapter RUN]`` means: a run (on base ``model``), else ``model``."""
        if run:
            return self.load_run(run, base=model, **options)
        if not model:
            raise LabError("Name a model (--model, e.g. demo or Qwen/Qwen2.5-VL-3B-Instruct) or a run (--adapter).")
        return self.load(model, **options)

    def load_any(self, name: str, **options: Any) -> Any:
        """``name`` as a person types it: a training run (its name under ``checkpoints/`` or its folder;
        its base model plus its adapter) or a model (a Hub id, a folder, ``demo``)."""
        if run_folder_of(name) is not None:
            return self.load_run(name, **options)
        return self.load(name, **options)

    def _holds_base(self, run: RunFolder, quantization: str | None) -> bool:
        loaded = self.loaded
        if loaded is None or (loaded.quantization or None) != (quantization or None):
            return False
        return same_model(loaded.name, resolve_model_name(run.base_model))

    def select_adapter(self, name: str | None) -> None:
        """Make the loaded adapter ``name`` (a run name) the active one; None turns adapters off for good."""
        with self.use(ModelState.LOADING) as loaded:
            if name is None:
                self.adapter_enabled = False
                return
            key = name if name in adapter_names(loaded) else peft_adapter_name(name)
            if key not in adapter_names(loaded):
                raise LabError("No adapter named {name} is loaded; load that run first.", name=name)
            loaded.model.set_adapter(key)
            loaded.adapter, self.adapter_enabled = name, True

    def set_adapter_enabled(self, enabled: bool) -> None:
        """Whether requests that do not say otherwise answer with the adapter on (True) or off."""
        self.adapter_enabled = bool(enabled)

    @contextmanager
    def generating(self, adapter: bool | None = None) -> Iterator[Any]:
        """Claim the model to generate, with the adapter on (True), off (False) or as set (None)."""
        with self.use(ModelState.GENERATING) as loaded:
            enabled = self.adapter_enabled if adapter is None else adapter
            with adapter_scope(loaded, enabled):
                yield loaded

    def current_run_dir(self) -> Path | None:
        """The run folder behind what is loaded: the one loaded, or the adapter's run just trained."""
        if self.run_dir is not None:
            return self.run_dir
        loaded = self.loaded
        if loaded is None:
            return None
        from lab.paths import runs_dir

        candidates = [Path(str(loaded.name))]
        if loaded.adapter:
            candidates.insert(0, runs_dir() / loaded.adapter)
        return next((c for c in candidates if (c / CONFIG_FILE).is_file()), None)

    def describe(self, viewer: str | None = None) -> dict[str, Any]:
        """What is loaded, for the app header and the API, as ``viewer`` (a visitor's session) may see it.

        On a shared deployment a failed load's sentence is shown only to the visitor who asked
        for it: it names what they typed.
        """
        error = self.last_error
        if error is not None and self.error_owner is not None and viewer != self.error_owner and restricted():
            error = None
        info: dict[str, Any] = {"state": self._state, "error": error, "download": self.download}
        loaded = self.loaded
        if loaded is not None:
            info.update(
                name=loaded.name,
                family=loaded.family,
                is_tiny=loaded.is_tiny,
                quantization=loaded.quantization or "none",
                device=str(loaded.device),
                dtype=str(loaded.dtype).replace("torch.", ""),
                memory_gib=_accelerator_memory_gib(),
                adapter=loaded.adapter,
                adapters=adapter_names(loaded),
                adapter_enabled=bool(loaded.adapter) and self.adapter_enabled,
                tuned_from=self._tuned_from(loaded),
            )
        return info

    def _tuned_from(self, loaded: Any) -> str | None:
        """The base model of a fully fine-tuned run's weights when those are what is loaded (None otherwise)."""
        if loaded.adapter or self.run_dir is None or Path(str(loaded.name)).resolve() != Path(self.run_dir).resolve():
            return None
        try:
            return str(RunFolder.read(self.run_dir).config.get("model") or "") or None
        except LabError:
            return None


# ---------------------------------------------------------------- runs and adapters


def resolve_model_name(name_or_path: str) -> str:
    """``demo`` -> the tiny demo model's folder (built on first use); anything else unchanged."""
    if name_or_path == DEMO_MODEL:
        from lab.tiny import ensure_demo_model

        return str(ensure_demo_model())
    return str(name_or_path)


def adapter_names(loaded: Any) -> list[str]:
    """Names of the adapters the loaded model carries (empty for a plain model)."""
    config = getattr(loaded.model, "peft_config", None)
    return list(config) if isinstance(config, dict) else []


def is_peft_model(model: Any) -> bool:
    return isinstance(getattr(model, "peft_config", None), dict) and hasattr(model, "disable_adapter")


def adapter_scope(loaded: Any, enabled: bool):
    """A context in which the model answers without its adapter (when ``enabled`` is False)."""
    if enabled or not is_peft_model(loaded.model):
        return nullcontext()
    return loaded.model.disable_adapter()


def attach_adapter(loaded: Any, adapter_dir: Path, run_name: str) -> None:
    from peft import PeftModel

    name = peft_adapter_name(run_name)
    try:
        if is_peft_model(loaded.model):
            if name in loaded.model.peft_config:
                loaded.model.delete_adapter(name)  # reload it: the run may have trained on
            loaded.model.load_adapter(str(adapter_dir), adapter_name=name)
        else:
            loaded.model = PeftModel.from_pretrained(loaded.model, str(adapter_dir), adapter_name=name)
        loaded.model.set_adapter(name)
    except (OSError, ValueError, KeyError, RuntimeError) as err:
        first = str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__
        raise ModelLoadError(
            "The adapter in {adapter_dir} does not fit {loaded_name}: {first}",
            adapter_dir=adapter_dir,
            loaded_name=loaded.name,
            first=first,
        ) from None
    loaded.model.eval()
    loaded.adapter = run_name


def same_model(a: str, b: str) -> bool:
    """Whether two model names or paths name the same model (a path and its resolved form alike)."""
    if a == b:
        return True
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def run_folder_of(name: str) -> Path | None:
    """The training run ``name`` names (a folder with a run's config, or a run's name), else None."""
    if not str(name).strip() or str(name) == DEMO_MODEL:
        return None
    try:
        path = find_run(name)
    except LabError:
        return None
    return path if any((p / CONFIG_FILE).is_file() for p in (path, path.parent)) else None


def free_accelerator_memory() -> None:
    import gc

    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


def _accelerator_memory_gib() -> float | None:
    import torch

    if not torch.cuda.is_available():
        return None
    return round(torch.cuda.memory_allocated() / 2**30, 2)
