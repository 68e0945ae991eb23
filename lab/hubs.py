"""Where models are downloaded from: the Hugging Face Hub, or ModelScope for those who cannot reach it.

:func:`fetch_model` turns a Hub id into a folder on this machine (the hub's own cache), with
the progress of the download reported as ``(bytes done, bytes in all)``. The hub is the
``hub`` option where a command or the page sets it, else ``LAB_MODEL_HUB``
(``huggingface`` or ``modelscope``), else the Hugging Face Hub. ModelScope needs the
``modelscope`` package (``pip install "vlm-lab[modelscope]"``); without it the choice is
refused with one sentence. Offline, the sentence names the model and the hub that lacks it.
"""

from __future__ import annotations

import inspect
import io
import os
from collections.abc import Callable
from dataclasses import dataclass

from lab.errors import ConfigError, ModelLoadError
from lab.settings import check, setting

HUB_ENV = "LAB_MODEL_HUB"
HUBS = ("huggingface", "modelscope")
HUB_NAMES = {"huggingface": "Hugging Face Hub", "modelscope": "ModelScope"}
# What loading a model needs from its repo: no other weight formats, no pictures of the model card.
MODEL_FILES = ["*.json", "*.safetensors", "*.jinja", "*.txt", "*.model", "*.tiktoken", "*.py"]

Progress = Callable[[int, int], None]


@dataclass
class SourceSettings:
    """Where a model comes from, for every command and form that loads one."""

    trust_remote_code: bool = setting(False, label="Trust remote code")
    """Run the Python code a model ships with (its config's auto_map); only for authors you trust. Refused on
    shared deployments."""
    hub: str | None = setting(None, label="Download models from", choices=(None, *HUBS))
    """Where Hub ids are downloaded from: huggingface or modelscope; empty: $LAB_MODEL_HUB, else the Hugging Face
    Hub."""

    def __post_init__(self):
        check(self)
        if self.hub:
            model_hub(self.hub)

    def load_options(self) -> dict:
        """The keyword arguments of :func:`lab.models.load_model` these settings stand for."""
        return {"trust_remote_code": self.trust_remote_code, "hub": self.hub}


def model_hub(hub: str | None = None) -> str:
    """The hub to download from: ``hub`` when given, else ``LAB_MODEL_HUB``, else ``huggingface``."""
    chosen = (hub or os.environ.get(HUB_ENV) or "huggingface").strip().lower()
    aliases = {"hf": "huggingface", "hugging_face": "huggingface", "ms": "modelscope"}
    chosen = aliases.get(chosen, chosen)
    if chosen not in HUBS:
        raise ConfigError(
            "Unknown model hub {hub!r} (from {where}); use 'huggingface' or 'modelscope'.",
            hub=hub or os.environ.get(HUB_ENV),
            where="hub" if hub else HUB_ENV,
        )
    return chosen


def fetch_model(repo_id: str, hub: str | None = None, progress: Progress | None = None) -> str:
    """The local folder of model ``repo_id``, downloaded from ``hub`` (:func:`model_hub`) when not cached."""
    chosen = model_hub(hub)
    if chosen == "modelscope":
        return _from_modelscope(repo_id, progress)
    return _from_huggingface(repo_id, progress)


def _offline(repo_id: str, hub: str) -> ModelLoadError:
    other = "modelscope" if hub == "huggingface" else "huggingface"
    return ModelLoadError(
        "{repo_id} is not on this machine and {hub_name} cannot be reached (offline?); download it once "
        "(hf download {repo_id} --local-dir DIR) and pass the local folder path, or set {env}={other} to "
        "download it from there.",
        repo_id=repo_id,
        hub_name=HUB_NAMES[hub],
        env=HUB_ENV,
        other=other,
    )


def _from_huggingface(repo_id: str, progress: Progress | None) -> str:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return snapshot_download(repo_id, allow_patterns=MODEL_FILES, tqdm_class=reporting_tqdm(progress))
    except GatedRepoError:
        raise ModelLoadError(
            "{repo_id} is gated on the Hugging Face Hub: accept its terms on its page and set "
            "HF_TOKEN (or run 'hf auth login').",
            repo_id=repo_id,
        ) from None
    except RepositoryNotFoundError:
        raise ModelLoadError(
            "The Hugging Face Hub has no model {repo_id} (or it is private: set HF_TOKEN).", repo_id=repo_id
        ) from None
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError):
        raise _offline(repo_id, "huggingface") from None


def _from_modelscope(repo_id: str, progress: Progress | None) -> str:
    try:
        from modelscope import snapshot_download
    except ImportError:
        raise ModelLoadError(
            "Downloading from ModelScope needs the modelscope package: pip install modelscope "
            "(or unset {env} to use the Hugging Face Hub).",
            env=HUB_ENV,
        ) from None
    kwargs = {}
    parameters = inspect.signature(snapshot_download).parameters
    if "allow_patterns" in parameters:
        kwargs["allow_patterns"] = MODEL_FILES
    if progress is not None and "progress_callbacks" in parameters:
        kwargs["progress_callbacks"] = [modelscope_callback(progress)]
    try:
        return str(snapshot_download(repo_id, **kwargs))
    except Exception as err:  # modelscope raises its own, requests' and plain errors alike for a failed download
        if "not exist" in str(err).lower() or "not found" in str(err).lower():
            raise ModelLoadError("ModelScope has no model {repo_id}.", repo_id=repo_id) from None
        raise _offline(repo_id, "modelscope") from None


def reporting_tqdm(progress: Progress | None):
    """A tqdm class that tells ``progress`` how many bytes of how many are downloaded (None: hf's own bars)."""
    if progress is None:
        return None
    from tqdm.auto import tqdm

    class Reporting(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.update(disable=False, file=io.StringIO())  # counted, not printed
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            shown = super().update(n)
            if self.unit == "B" and self.total:
                progress(int(self.n), int(self.total))
            return shown

    return Reporting


def modelscope_callback(progress: Progress):
    """A ModelScope progress callback class adding up the bytes of every file into ``progress``."""
    totals = {"done": 0, "all": 0}

    class Callback:
        def __init__(self, filename: str, file_size: int):
            totals["all"] += int(file_size or 0)

        def update(self, size: int) -> None:
            totals["done"] += int(size or 0)
            progress(totals["done"], totals["all"])

        def end(self) -> None:
            pass

    return Callback
