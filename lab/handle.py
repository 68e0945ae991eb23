"""The one owner of the loaded model.

Every part of the app (training, evaluation, chat, labeling with the local model) goes
through a :class:`ModelHandle`. A job claims the model with :meth:`ModelHandle.use`;
while one job holds it, another is refused at once with a :class:`BusyError` that
says why, instead of waiting on the GPU or corrupting the weights.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from enum import Enum
from typing import Any, Iterator

from lab.errors import BusyError, LabError


# The name that stands for the tiny random demo model (built offline on first use).
DEMO_MODEL = "demo"


class ModelState(str, Enum):
    EMPTY = "empty"
    LOADING = "loading"
    READY = "ready"
    TRAINING = "training"
    GENERATING = "generating"


_BUSY = {
    ModelState.LOADING: "a model is being loaded",
    ModelState.TRAINING: "a training run is using the model",
    ModelState.GENERATING: "the model is answering another request",
}


class ModelHandle:
    """Holds the loaded model (a :class:`lab.models.LoadedModel`) and its state."""

    def __init__(self) -> None:
        self._guard = threading.Lock()  # held only to read or change the state
        self._state = ModelState.EMPTY
        self.loaded: Any = None
        self.last_error: str | None = None

    @property
    def state(self) -> ModelState:
        return self._state

    def _claim(self, new_state: ModelState, need_model: bool) -> None:
        with self._guard:
            if self._state in _BUSY:
                raise BusyError(f"The model is busy: {_BUSY[self._state]}; try again when it is done.")
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
            self.loaded = None
            if name_or_path == DEMO_MODEL:
                from lab.tiny import ensure_demo_model

                name_or_path = str(ensure_demo_model())
            self.loaded = load_model(name_or_path, **options)
            self.last_error = None
        except LabError as err:
            self.last_error = str(err)
            raise
        finally:
            self._release()
        return self.loaded

    def load_in_background(self, name_or_path: str, **options: Any) -> threading.Thread:
        """Start :meth:`load` in a thread; errors end up in ``last_error``."""

        def run() -> None:
            try:
                self.load(name_or_path, **options)
            except LabError:
                pass  # recorded in last_error, shown in the header

        thread = threading.Thread(target=run, name="model-load", daemon=True)
        thread.start()
        return thread

    def unload(self) -> None:
        self._claim(ModelState.LOADING, need_model=False)
        try:
            self.loaded = None
            _free_accelerator_memory()
        finally:
            self._release()

    def describe(self) -> dict[str, Any]:
        """What is loaded, for the app header and the API."""
        info: dict[str, Any] = {"state": self._state.value, "error": self.last_error}
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
            )
        return info


def _free_accelerator_memory() -> None:
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
