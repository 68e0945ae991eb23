"""How many pixels of each picture a processor keeps: each family's knob for ``min_pixels`` / ``max_pixels``.

Fewer pixels, fewer image tokens. Qwen-VL's processors keep between ``min_pixels`` and
``max_pixels``; InternVL cuts at most ``max_pixels`` worth of tiles, MiniCPM-V of slices, SmolVLM
resizes its longest edge to fit; a family with one fixed image size (Gemma 3) has nothing to bound.
Which knob a family has is its ``pixels`` entry in :mod:`lab.families`.
"""

from __future__ import annotations

from collections.abc import Callable

from lab.errors import ConfigError
from lab.families import FAMILIES, get_family


def set_image_pixels(
    processor, *, min_pixels: int | None = None, max_pixels: int | None = None, family: str | None = None
) -> None:
    """Bound the pixels per image the processor keeps (fewer pixels: fewer image tokens).

    Each family has its knob (:data:`PIXEL_SETTERS`): Qwen-VL's processors keep
    between ``min_pixels`` and ``max_pixels``; InternVL cuts at most ``max_pixels`` worth of
    tiles, MiniCPM-V of slices, SmolVLM resizes its longest edge to fit; a family with one fixed
    image size (Gemma 3) has nothing to bound. ``family`` None reads the knob off the processor.
    """
    if min_pixels is None and max_pixels is None:
        return
    for value in (min_pixels, max_pixels):
        if value is not None and (not isinstance(value, int) or value <= 0):
            raise ConfigError("min_pixels and max_pixels must be positive whole numbers (got {value!r}).", value=value)
    if min_pixels and max_pixels and min_pixels > max_pixels:
        raise ConfigError(
            "min_pixels ({min_pixels}) is larger than max_pixels ({max_pixels}).",
            min_pixels=min_pixels,
            max_pixels=max_pixels,
        )
    image_processor = getattr(processor, "image_processor", None)
    knob = get_family(family).pixels if family in FAMILIES else _pixel_knob(image_processor)
    setter = PIXEL_SETTERS[knob]
    if setter is not None:
        setter(image_processor, min_pixels, max_pixels)


def _pixel_knob(image_processor) -> str:
    """The pixel knob of a processor of no known family, read off its settings."""
    size = getattr(image_processor, "size", None)
    if getattr(size, "longest_edge", None) is not None and hasattr(image_processor, "merge_size"):
        return "qwen"
    for attribute, knob in (("max_patches", "tiles"), ("max_slice_nums", "slices"), ("max_image_size", "splits")):
        if getattr(image_processor, attribute, None) is not None:
            return knob
    return "fixed"


def _qwen_pixels(image_processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """Qwen-VL's processor keeps between ``shortest_edge`` and ``longest_edge`` pixels (an area, not an edge)."""
    size = image_processor.size
    bounds = {"shortest_edge": size.shortest_edge, "longest_edge": size.longest_edge}
    if min_pixels is not None:
        bounds["shortest_edge"] = min_pixels
    if max_pixels is not None:
        bounds["longest_edge"] = max_pixels
    if bounds["shortest_edge"] > bounds["longest_edge"]:
        low, high = bounds["shortest_edge"], bounds["longest_edge"]
        raise ConfigError("min_pixels ({low}) is larger than max_pixels ({high}).", low=low, high=high)
    image_processor.size = type(size)(**bounds)


# The knobs below only lower the processor's own limit: these processors resize every picture up to it.


def _tile_pixels(image_processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """InternVL cuts an image into square tiles (plus a thumbnail): at most max_pixels / tile area of them."""
    tile = image_processor.size.height * image_processor.size.width
    if max_pixels is not None:
        image_processor.max_patches = max(1, min(image_processor.max_patches, max_pixels // tile))
    if min_pixels is not None:
        image_processor.min_patches = max(1, min(min_pixels // tile, image_processor.max_patches))


def _slice_pixels(image_processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """MiniCPM-V adds slices of about scale_resolution² pixels next to the whole picture."""
    if max_pixels is not None:
        slices = max_pixels // image_processor.scale_resolution**2
        image_processor.max_slice_nums = max(1, min(image_processor.max_slice_nums, slices))


def _split_pixels(image_processor, min_pixels: int | None, max_pixels: int | None) -> None:
    """SmolVLM resizes the longest edge to a multiple of its tile edge, then splits into tiles."""
    if max_pixels is not None:
        tile = image_processor.max_image_size["longest_edge"]
        edge = max(tile, min(image_processor.size["longest_edge"], int(max_pixels**0.5) // tile * tile))
        image_processor.size = {**dict(image_processor.size), "longest_edge": edge}


PIXEL_SETTERS: dict[str, Callable | None] = {
    "qwen": _qwen_pixels,
    "tiles": _tile_pixels,
    "slices": _slice_pixels,
    "splits": _split_pixels,
    "fixed": None,
}
