"""The vision tower's index tensors of a batch, computed by the data loader's workers on the CPU.

A Qwen-VL tower begins every forward pass by turning the picture grids (``image_grid_thw``)
into index tensors: the rotary position of every patch, the boundaries of each picture's
attention and its longest piece, and for Qwen2.5-VL the windows. transformers computes them
from the grids on the GPU with Python loops and ``.tolist()``: on the 3B benchmark that is
13 reads back from the GPU a step, each waiting for every kernel queued before it, the
previous step's backward pass and optimizer included, while the GPU then waits for the
host. The functions read nothing of the model but its vision config, and the tower takes
their results precomputed under their own names (transformers' ``vision_utils``), so the
workers call the same functions on the batch's CPU grids (:class:`TowerIndex`), the result
travels to the GPU with the batch (pinned, without blocking), and a pre-hook hands it to the
tower (:class:`TowerFeed`). Same tensors, computed where nothing waits for them.

Where, given those, the model reads the grids only to split the features per picture (Qwen2-VL,
Qwen2.5-VL: the family's ``"host_grid"``), the grids stay on the host (:data:`HOST_GRIDS`): that
split then reads nothing back from the GPU either. transformers also reads back, each step, the
count of picture placeholders to check it against the features; the workers count the same on
the CPU (:meth:`TowerIndex.placeholder_counts`), the training step checks them (:func:`on_host`),
and while such a model trains that check of transformers is off (``TRANSFORMERS_DISABLE_TORCH_CHECK``,
:func:`host_checks`).

Which of these a tower uses is declared in the family table (:attr:`lab.families.Family.tower_index`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from lab.errors import DatasetError

KEY = "tower_index"  # the batch's field: {"image": {...}, "video": {...}}
# the batch's field: {"grids": {"image_grid_thw": [[t, h, w], ...]}, "counts": {"image": (tokens, features)}},
# lists and numbers, so that they stay on the host
HOST_GRIDS = "host_grids"
_GRIDS = (("image_grid_thw", "image"), ("video_grid_thw", "video"))
_CHECK_OFF = "TRANSFORMERS_DISABLE_TORCH_CHECK"


class TowerIndex:
    """Computes, from a batch's grids, the index tensors a vision tower would compute from them."""

    def __init__(self, parts: tuple[str, ...], config: Any, token_ids: dict[str, int] | None = None):
        self.parts = parts  # of "positions", "seqlens", "windows", "host_grid"
        self.config = config  # the tower's config
        self.token_ids = token_ids or {}  # {"image": id, "video": id} of the placeholders

    @classmethod
    def of(cls, model: Any) -> TowerIndex | None:
        """The index of ``model``'s vision tower (under PEFT too), or None where its family declares none."""
        try:
            from transformers import vision_utils  # noqa: F401  (older transformers compute them in the tower)
        except ImportError:
            return None
        from lab.families import family_name, get_family
        from lab.training.speed import vision_tower

        family = get_family(family_name(model))
        tower = vision_tower(model)
        if not family.tower_index or tower is None or not hasattr(tower, "config"):
            return None
        config = getattr(model, "config", None)
        token_ids = {m: getattr(config, f"{m}_token_id", None) for m in ("image", "video")}
        return cls(family.tower_index, tower.config, {m: i for m, i in token_ids.items() if i is not None})

    @property
    def host_grid(self) -> bool:
        """True where the model, given this index, reads its grids only on the host."""
        return "host_grid" in self.parts

    def __call__(self, batch: dict) -> dict:
        return {modality: self.of_grid(batch[key]) for key, modality in _GRIDS if batch.get(key) is not None}

    def host_grids(self, batch: dict) -> dict | None:
        """The batch's grids as lists and its placeholder counts (:data:`HOST_GRIDS`); None where the grids go
        to the GPU."""
        if not self.host_grid:
            return None
        grids = {key: batch[key].tolist() for key, _ in _GRIDS if batch.get(key) is not None}
        return {"grids": grids, "counts": self.placeholder_counts(batch)}

    def placeholder_counts(self, batch: dict) -> dict[str, tuple[int, int]]:
        """``{modality: (placeholder tokens, features its grids give)}``: equal in a batch the model can take."""
        merge = self.config.spatial_merge_size
        counts = {}
        for key, modality in _GRIDS:
            grid, token_id = batch.get(key), self.token_ids.get(modality)
            if grid is not None and token_id is not None and "input_ids" in batch:
                tokens = int((batch["input_ids"] == token_id).sum())
                counts[modality] = (tokens, int(grid.prod(-1).sum()) // merge**2)
        return counts

    def of_grid(self, grid: Any) -> dict:
        """The tower's keyword arguments for pictures of these ``(t, h, w)`` grids."""
        from transformers import vision_utils as vu

        merge = self.config.spatial_merge_size
        index: dict[str, Any] = {}
        if "positions" in self.parts:
            index["position_ids"] = vu.get_vision_position_ids(grid, merge)
        if "seqlens" in self.parts:
            index["cu_seqlens"] = vu.get_vision_cu_seqlens(grid)
            index["max_seqlen"] = _longest(index["cu_seqlens"])
        if "windows" in self.parts:
            windows, bounds = vu.get_vision_window_index(grid, merge, self.config.window_size, self.config.patch_size)
            index.update(window_index=windows, cu_window_seqlens=bounds, max_window_seqlen=_longest(bounds))
        return index


def host_checks(index: TowerIndex | None) -> Any:
    """While a model whose grids stay on the host trains, transformers' own checks that read values back
    from the GPU (the placeholder count) are off: :func:`on_host` checks the counts from the workers.
    Returns the function that puts them back."""
    import os

    if index is None or not index.host_grid or _CHECK_OFF in os.environ:
        return lambda: None
    os.environ[_CHECK_OFF] = "1"
    return lambda: os.environ.pop(_CHECK_OFF, None)


def on_host(inputs: dict, keep: bool = True) -> None:
    """Put the batch's host grids (:data:`HOST_GRIDS`) in ``inputs`` in place of the grids on the GPU
    (with ``keep``: while a :class:`TowerFeed` hands the tower its index; else the tower needs them there).

    Raises :class:`DatasetError` where the placeholder tokens and the features the grids give differ
    (a check transformers makes on the GPU, off while such a model trains: :func:`host_checks`)."""
    import torch

    found = inputs.pop(HOST_GRIDS, None) or {}
    for modality, (tokens, features) in found.get("counts", {}).items():
        if tokens != features:
            raise DatasetError(
                "A batch has {tokens} placeholder tokens for {features} features of its {modality}s: a text "
                "of the dataset contains the model's {modality} placeholder token; take it out of the text.",
                tokens=tokens,
                features=features,
                modality=modality,
            )
    for key, rows in found.get("grids", {}).items() if keep else ():
        inputs[key] = torch.tensor(rows, dtype=torch.long)


def _longest(bounds: Any) -> int:
    return int((bounds[1:] - bounds[:-1]).max()) if bounds.numel() > 1 else 0


class TowerFeed:
    """Hands each batch's index (its :data:`KEY` field, on the model's device) to the vision tower of
    ``model`` through one forward pre-hook, matched to the call by the grid it is given."""

    def __init__(self, model: Any):
        from lab.training.speed import vision_tower

        tower = vision_tower(model)
        self._index: dict = {}
        self._grids: dict[int, str] = {}
        self._handle = tower.register_forward_pre_hook(self._hook, with_kwargs=True) if tower is not None else None

    @contextlib.contextmanager
    def batch(self, index: dict | None, inputs: dict) -> Iterator[None]:
        """While the model runs on ``inputs``, the tower takes ``index`` for their grids."""
        self._index = index or {}
        self._grids = {id(inputs[key]): modality for key, modality in _GRIDS if inputs.get(key) is not None}
        try:
            yield
        finally:
            self._index, self._grids = {}, {}

    def _hook(self, module: Any, args: tuple, kwargs: dict) -> tuple:
        modality = self._grids.get(id(kwargs.get("grid_thw")))
        if modality not in self._index:
            return args, kwargs
        return args, {**kwargs, **self._index[modality]}

    def remove(self) -> None:
        if self._handle is not None:
            self._handle.remove()
