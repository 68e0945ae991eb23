"""From encoded samples to batches: images decoded in the data loader's workers, padding, where the loss looks.

A training step decodes and resizes its images in the data loader's worker processes
(:class:`TrainDataset`), so that work overlaps the step, and pads the batch
(:class:`Collator`); :class:`LossCollator` also lists the learned positions and the
Qwen-VL positions computed on the CPU. Samples are tokenized before training
(:mod:`lab.training.encode`).
"""

from __future__ import annotations

from typing import Any

from lab.images import open_image
from lab.training.encode import IGNORE, EncodedSample


class TrainDataset:
    """A map-style dataset over encoded samples; ``__getitem__`` decodes and processes the images.

    It runs in the data loader's worker processes, so image decoding and resizing overlap
    with the training step instead of stalling it.
    """

    def __init__(self, samples: list[EncodedSample], processor: Any, pixel_dtype: Any = None):
        self.samples = samples
        self.processor = processor
        # bf16 pixels halve the bytes that travel to the GPU; the model casts them to its dtype anyway
        self.pixel_dtype = pixel_dtype

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def lengths(self) -> list[int]:
        return [s.length for s in self.samples]

    def __getitem__(self, index: int) -> dict:
        import torch

        sample = self.samples[index]
        if sample.videos:
            from lab.video import processor_media

            media = processor_media(self.processor, sample.images, sample.videos, sample.video_budget)
            out = self.processor(text=[sample.text], return_tensors="pt", **media)
        else:
            images = [open_image(path) for path in sample.images]
            out = self.processor(
                text=[sample.text], images=images or None, return_tensors="pt", add_special_tokens=False
            )
        ids = out["input_ids"][0]
        if ids.tolist() != sample.input_ids:
            raise RuntimeError(
                f"sample {sample.key}: the processor produced {len(ids)} tokens where {sample.length} were planned"
            )
        item = {k: (v[0] if _is_sequence(v, len(ids)) else v) for k, v in out.items() if v is not None}
        for pixels in ("pixel_values", "pixel_values_videos"):
            if self.pixel_dtype is not None and pixels in item:
                item[pixels] = item[pixels].to(self.pixel_dtype)
        item["labels"] = torch.tensor(sample.labels, dtype=torch.long)
        return item


def _is_sequence(value: Any, length: int) -> bool:
    return hasattr(value, "shape") and value.dim() == 2 and value.shape[0] == 1 and value.shape[1] == length


class RopeIndex:
    """The 3-D (M-RoPE) positions of a padded batch, from the model's own ``get_rope_index`` run on the CPU.

    A Qwen-VL model computes these positions inside ``forward`` when it is given none: a
    Python loop over the samples that reads token types and image grids back from the GPU,
    each read waiting for every kernel queued before it. The method reads nothing of the
    model but its config, so the data loader's workers run it on the batch's CPU tensors,
    with the same arguments the model would pass, and the model takes the result as it is.
    """

    def __init__(self, owner: type, config: Any):
        self.owner = owner  # the model class that defines get_rope_index
        self.config = config

    @classmethod
    def of(cls, model: Any) -> RopeIndex | None:
        """The positions function of ``model`` (under PEFT too), or None for models without M-RoPE."""
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        for module in base.modules():
            if callable(getattr(type(module), "get_rope_index", None)) and hasattr(module, "config"):
                return cls(type(module), module.config)
        return None

    def __call__(self, batch: dict) -> Any:
        """``(3, batch, seq)`` positions, or None where the model would not compute any (no images or videos)."""
        grids = {k: batch[k] for k in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts") if k in batch}
        if "mm_token_type_ids" not in batch or not grids.keys() & {"image_grid_thw", "video_grid_thw"}:
            return None
        # The method is called on a bare instance that has the config and no weights.
        bare = object.__new__(self.owner)
        vars(bare)["config"] = self.config
        positions, _ = self.owner.get_rope_index(
            bare,
            batch["input_ids"],
            mm_token_type_ids=batch["mm_token_type_ids"],
            attention_mask=batch.get("attention_mask"),
            **grids,
        )
        return positions


class Collator:
    """Pads a list of :class:`TrainDataset` items into one batch (right padding).

    Per-token fields (ids, attention mask, token types) are padded to the longest sample,
    rounded up to ``pad_to_multiple_of``; labels are padded with -100. Image and video fields
    (``pixel_values``, ``image_grid_thw``, ``pixel_values_videos``, ``video_grid_thw``) are
    concatenated, as the processor does for a batch; where samples differ in size beyond the
    first dimension (SmolVLM's tiles per picture, MiniCPM-V's packed patches) they are padded
    with zeros first, as the processor pads them. The ``packed`` fields (a family's
    :attr:`~lab.families.Family.packed`: MiniCPM-V puts the patches of every picture of a batch
    into one sequence) are joined along their last dimension.
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int = 1, packed: tuple[str, ...] = ()):
        self.pad_token_id = pad_token_id
        self.pad_to_multiple_of = max(1, pad_to_multiple_of)
        self.packed = tuple(packed)

    def __call__(self, items: list[dict]) -> dict:
        import torch

        longest = max(item["input_ids"].shape[0] for item in items)
        width = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        keys = dict.fromkeys(key for item in items for key in item)
        batch: dict[str, Any] = {}
        for key in keys:
            present = [item for item in items if key in item]
            if all(_per_token(item, key) for item in present) and len(present) == len(items):
                fill = self.pad_token_id if key == "input_ids" else IGNORE if key == "labels" else 0
                batch[key] = torch.stack([_pad(item[key], width, fill) for item in present])
            elif key in self.packed:
                batch[key] = torch.cat([item[key] for item in present], dim=-1)
            else:
                batch[key] = torch.cat(_pad_trailing([item[key] for item in present]), dim=0)
        return batch


class LossCollator(Collator):
    """A :class:`Collator` that also lists, on the CPU, where the loss looks (see :mod:`lab.training.trainer`).

    ``loss_positions``: sequence positions (shared by the batch) whose next token is learned;
    ``loss_index``: flat indices into ``batch x positions`` of the learned ones;
    ``loss_targets``: their token ids. With a :class:`RopeIndex` (``rope``) it also adds the
    model's ``position_ids``, so the model need not compute them on the GPU; with a
    :class:`~lab.training.tower_index.TowerIndex` (``tower``), the vision tower's index tensors
    (``tower_index``) and, where the model then reads its grids only on the host, those as lists
    (``host_grids``). With ``packing``
    a batch of several samples is one row without padding (:func:`lab.training.packing.pack`).
    """

    def __init__(
        self,
        pad_token_id: int,
        pad_to_multiple_of: int = 1,
        rope: RopeIndex | None = None,
        packed: tuple[str, ...] = (),
        packing: bool = False,
        tower: Any = None,
    ):
        super().__init__(pad_token_id, pad_to_multiple_of, packed)
        self.rope = rope
        self.packing = packing
        self.tower = tower  # a lab.training.tower_index.TowerIndex
        # A batch without padding goes without its all-ones mask: the model then attends causally with
        # SDPA's own causal kernel, and reads nothing back to find that out (lab.training.speed.ready_causal_mask).
        self.unpadded_without_mask = False

    def __call__(self, items: list[dict]) -> dict:
        if self.packing and len(items) > 1:
            from lab.training.packing import pack

            batch = pack(items, self.pad_token_id, self.pad_to_multiple_of, self.rope)
        else:
            batch = super().__call__(items)
            rope_positions = self.rope(batch) if self.rope is not None else None
            if rope_positions is not None:
                batch["position_ids"] = rope_positions
        if self.tower is not None:
            from lab.training.tower_index import HOST_GRIDS, KEY

            batch[KEY] = self.tower(batch)
            grids = self.tower.host_grids(batch) if "position_ids" in batch else None  # else the model reads them
            if grids:
                batch[HOST_GRIDS] = grids
        mask = batch.get("attention_mask")
        if self.unpadded_without_mask and mask is not None and not self.packing and bool(mask.all()):
            del batch["attention_mask"]
        shifted = batch["labels"][:, 1:]
        learned = shifted != IGNORE
        positions = learned.any(dim=0).nonzero().squeeze(1)
        kept = shifted[:, positions]
        flat = (kept != IGNORE).reshape(-1).nonzero().squeeze(1)
        batch["loss_positions"] = positions
        batch["loss_index"] = flat
        batch["loss_targets"] = kept.reshape(-1)[flat]
        return batch


def _per_token(item: dict, key: str) -> bool:
    value = item[key]
    return (
        value.dim() == 1
        and key not in ("image_grid_thw", "video_grid_thw", "second_per_grid_ts")
        and value.shape[0] == item["input_ids"].shape[0]
    )


def _pad_trailing(tensors: list) -> list:
    """``tensors`` zero-padded at the end of every dimension but the first to the largest size."""
    import torch.nn.functional as F

    if len({t.shape[1:] for t in tensors}) <= 1:
        return tensors
    largest = [max(sizes) for sizes in zip(*(t.shape[1:] for t in tensors))]
    padded = []
    for tensor in tensors:
        widths = [w for big, size in reversed(list(zip(largest, tensor.shape[1:]))) for w in (0, big - size)]
        padded.append(F.pad(tensor, widths))
    return padded


def _pad(tensor: Any, width: int, fill: int) -> Any:
    import torch

    if tensor.shape[0] == width:
        return tensor
    pad = torch.full((width - tensor.shape[0],), fill, dtype=tensor.dtype)
    return torch.cat([tensor, pad])
