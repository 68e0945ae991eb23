"""Labeling: turn a folder of images into a training set by asking a strong model.

- :mod:`~lab.labeling.client`: the API labeler (any OpenAI-compatible endpoint, through :mod:`lab.endpoint_client`).
- :mod:`~lab.labeling.local`: the app's loaded model as the labeler (free, offline).
- :mod:`~lab.labeling.answers`: is an answer usable (JSON, expected keys, refusals)?
- :mod:`~lab.labeling.costs` and :mod:`~lab.labeling.estimate`: the price table, per-item cost, run estimates.
- :mod:`~lab.labeling.item`: labeling one image, shared by preview and batch.
- :mod:`~lab.labeling.preview`: prompt variants on a few images.
- :mod:`~lab.labeling.batch` and :mod:`~lab.labeling.store`: the resumable run into a dataset folder.
- :mod:`~lab.labeling.review`: editing and rejecting labeled items.

Typical use::

    prompt = PromptSpec.from_preset(load_prompt_preset("sample_caption"), "en")
    labeler = ApiLabeler(LabelerConfig(provider="openai", model="gpt-4o-mini"))
    run = run_labeling("photos/", "data/photos", prompt, labeler)  # a LabelRun: counts, cost, state
"""

from lab.labeling.batch import LabelRun, label_folder, run_labeling, start_labeling
from lab.labeling.client import ApiLabeler, LabelerConfig, load_providers
from lab.labeling.estimate import estimate_folder
from lab.labeling.item import ItemResult, PromptSpec
from lab.labeling.preview import run_preview

__all__ = [
    "ApiLabeler",
    "ItemResult",
    "LabelRun",
    "LabelerConfig",
    "PromptSpec",
    "estimate_folder",
    "label_folder",
    "load_providers",
    "run_labeling",
    "run_preview",
    "start_labeling",
]
