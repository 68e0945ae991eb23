"""Boxes: ms-swift's grounding records, and each model family's way of writing a box.

A record carries its boxes as ms-swift's grounding format does: ``<ref-object>`` and
``<bbox>`` placeholders in the messages and an ``objects`` field that fills them, refs and
boxes each in their own order (a placeholder of one kind takes the next value of that kind)::

    {"messages": [{"role": "user", "content": "<image>Find the <ref-object>."},
                  {"role": "assistant", "content": "<bbox>"}],
     "images": ["images/0005.png"],
     "objects": {"ref": ["Submit button"], "bbox": [[20, 112, 110, 138]]}}

A box is ``[x1, y1, x2, y2]`` in pixels of the ORIGINAL image (``bbox_type`` ``real``, the
default) or as fractions of its size (``norm1``); ``image_id`` says which of the record's
images each box belongs to (default: the first). The collator writes them as the model
family expects (:data:`BOX_FORMATS`, keyed by ``model_type``), for a 224x224 image and the
box above:

==============  ==========================================================================
qwen2_vl        ``<|object_ref_start|>Submit button<|object_ref_end|>`` +
                ``<|box_start|>(89,500),(491,616)<|box_end|>`` (a 0-1000 grid)
qwen2_5_vl      the same tokens, in pixels of the image the processor feeds the model
                (resized by its ``smart_resize`` rule within min/max pixels)
qwen3_vl        the same tokens on the 0-1000 grid, as Qwen3-VL answers and ms-swift trains it
other families  the phrase as text and the box as JSON ``[89, 500, 491, 616]`` (0-1000 grid)
==============  ==========================================================================

Evaluation reads boxes back from an answer in the family's form or as a JSON
``[x1, y1, x2, y2]`` list (also inside ``{"bbox_2d": [...]}``), in the family's coordinates,
and scores them against the record's boxes in original pixels (:mod:`lab.box_answers`).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import Any

from lab.families import FAMILIES
from lab.text import Msg

REF = "<ref-object>"
BOX = "<bbox>"
GRID = 1000  # the normalised grid: 0 is the left (top) edge, 1000 the right (bottom) edge


@dataclass(frozen=True)
class BoxFormat:
    """How one family writes a box: with Qwen's tokens or as plain JSON, on the grid or in resized pixels."""

    tokens: bool
    space: str  # "grid" (0-1000 of the image) or "resized" (pixels of the image the model sees)


PLAIN = BoxFormat(tokens=False, space="grid")
_SPACES = {"0-1000": "grid", "pixels": "resized"}  # lab.families' box_format names
BOX_FORMATS = {
    family.name: BoxFormat(tokens=True, space=_SPACES[family.box_format])
    for family in FAMILIES.values()
    if family.box_format is not None
}
# Qwen's grounding tokens: kept when an answer is decoded, so its boxes can be read back.
BOX_TOKENS = ("<|object_ref_start|>", "<|object_ref_end|>", "<|box_start|>", "<|box_end|>")


def box_format(family: str | None) -> BoxFormat:
    """The box format of a model family (``model_type``); plain JSON for families without grounding tokens."""
    return BOX_FORMATS.get(family or "", PLAIN)


@dataclass(frozen=True)
class ImageSpace:
    """An image as the dataset has it (``width`` x ``height``) and as the model sees it (``seen_*``)."""

    width: int
    height: int
    seen_width: int
    seen_height: int

    def scale(self, fmt: BoxFormat) -> tuple[float, float]:
        """Model units per original pixel, along x and y."""
        if fmt.space == "resized":
            return self.seen_width / self.width, self.seen_height / self.height
        return GRID / self.width, GRID / self.height


def image_space(processor: Any, height: int, width: int) -> ImageSpace:
    """Where an image of ``height`` x ``width`` pixels ends up in ``processor``'s hands.

    A Qwen-VL image processor resizes with ``smart_resize`` to multiples of patch x merge
    size within its min/max pixels (``size.shortest_edge`` / ``size.longest_edge``); other
    processors are taken to keep the size (only the grid formats are used with them).
    """
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    merge = getattr(image_processor, "merge_size", None)
    if merge is None or getattr(size, "longest_edge", None) is None:
        return ImageSpace(width, height, width, height)
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    seen_h, seen_w = smart_resize(
        height,
        width,
        factor=image_processor.patch_size * merge,
        min_pixels=size.shortest_edge,
        max_pixels=size.longest_edge,
    )
    return ImageSpace(width, height, seen_w, seen_h)


# ---------------------------------------------------------------- the objects of a record


@dataclass
class Objects:
    """A record's ``objects``: refs and boxes in original pixels (``norm1`` already scaled), each box's image."""

    refs: list[str]
    boxes: list[list[float]]
    image_ids: list[int]


def object_faults(record: dict, sizes: list[tuple[int, int] | None]) -> list[Msg]:
    """What is wrong with a record's ``objects`` against its placeholders and its images' ``(height, width)``."""
    objects = record.get("objects")
    texts = [m.get("content") for m in record.get("messages") or [] if isinstance(m, dict)]
    texts = [t for t in texts if isinstance(t, str)]
    n_refs, n_boxes = sum(t.count(REF) for t in texts), sum(t.count(BOX) for t in texts)
    if objects is None:
        if n_refs or n_boxes:
            return [Msg("{n} {ref}/{box} placeholder(s) but no 'objects'", n=n_refs + n_boxes, ref=REF, box=BOX)]
        return []
    shape = _shape_fault(objects)
    if shape is not None:
        return [shape]
    reasons = []
    if len(objects.get("ref") or []) != n_refs:
        reasons.append(
            Msg(
                "{n} {placeholder} placeholder(s) but {count} ref(s) in 'objects'",
                n=n_refs,
                placeholder=REF,
                count=len(objects.get("ref") or []),
            )
        )
    if len(objects.get("bbox") or []) != n_boxes:
        reasons.append(
            Msg(
                "{n} {placeholder} placeholder(s) but {count} box(es) in 'objects'",
                n=n_boxes,
                placeholder=BOX,
                count=len(objects.get("bbox") or []),
            )
        )
    return reasons + _box_faults(objects, sizes)


def _shape_fault(objects: Any) -> Msg | None:
    if not isinstance(objects, dict):
        return Msg("'objects' is not an object with 'ref' and 'bbox' lists")
    refs, boxes = objects.get("ref") or [], objects.get("bbox") or []
    if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
        return Msg("'objects.ref' is not a list of phrases")
    if not isinstance(boxes, list) or not all(_is_box(b) for b in boxes):
        return Msg("'objects.bbox' is not a list of [x1, y1, x2, y2] boxes")
    if objects.get("bbox_type", "real") not in ("real", "norm1"):
        return Msg("'objects.bbox_type' is {value!r}, not 'real' or 'norm1'", value=objects.get("bbox_type"))
    ids = objects.get("image_id")
    if ids is not None and (not isinstance(ids, list) or not all(isinstance(i, int) and i >= 0 for i in ids)):
        return Msg("'objects.image_id' is not a list of image numbers")
    return None


def _is_box(box: Any) -> bool:
    return (
        isinstance(box, list)
        and len(box) == 4
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)
    )


def _box_faults(objects: dict, sizes: list[tuple[int, int] | None]) -> list[Msg]:
    reasons = []
    ids = list(objects.get("image_id") or [])
    norm = objects.get("bbox_type", "real") == "norm1"
    for i, box in enumerate(objects.get("bbox") or [], start=1):
        image = ids[i - 1] if i - 1 < len(ids) else 0
        if image >= len(sizes):
            reasons.append(
                Msg("box {i} belongs to image {image}, but the record has {n} image(s)", i=i, image=image, n=len(sizes))
            )
            continue
        x1, y1, x2, y2 = box
        if not (x1 < x2 and y1 < y2):
            reasons.append(Msg("box {i} {box} does not have x1 < x2 and y1 < y2", i=i, box=box))
        elif sizes[image] is not None:
            height, width = (1, 1) if norm else sizes[image]
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                reasons.append(
                    Msg(
                        "box {i} {box} is not inside its image ({width}x{height})",
                        i=i,
                        box=box,
                        width=sizes[image][1],
                        height=sizes[image][0],
                    )
                )
    return reasons


def read_objects(record: dict, sizes: list[tuple[int, int]]) -> Objects | None:
    """The record's objects with boxes in original pixels (``sizes``: each image's ``(height, width)``)."""
    objects = record.get("objects")
    if not objects:
        return None
    boxes = [list(map(float, b)) for b in objects.get("bbox") or []]
    ids = list(objects.get("image_id") or [])
    ids += [0] * (len(boxes) - len(ids))
    if objects.get("bbox_type", "real") == "norm1":
        boxes = [
            [b[0] * sizes[k][1], b[1] * sizes[k][0], b[2] * sizes[k][1], b[3] * sizes[k][0]] for b, k in zip(boxes, ids)
        ]
    return Objects(list(objects.get("ref") or []), boxes, ids[: len(boxes)])


# ---------------------------------------------------------------- writing boxes for a model


def model_box(box: list[float], space: ImageSpace, fmt: BoxFormat) -> list[int]:
    """A box in original pixels as the family writes it: whole numbers on its grid or resized pixels."""
    sx, sy = space.scale(fmt)
    return [int(round(box[0] * sx)), int(round(box[1] * sy)), int(round(box[2] * sx)), int(round(box[3] * sy))]


def render_ref(ref: str, fmt: BoxFormat) -> str:
    return f"<|object_ref_start|>{ref}<|object_ref_end|>" if fmt.tokens else ref


def render_box(box: list[int], fmt: BoxFormat) -> str:
    if fmt.tokens:
        return f"<|box_start|>({box[0]},{box[1]}),({box[2]},{box[3]})<|box_end|>"
    return json.dumps(box)


def render_objects(
    messages: list[dict], objects: Objects | None, fmt: BoxFormat, spaces: list[ImageSpace]
) -> list[dict]:
    """``messages`` with every ``<ref-object>`` and ``<bbox>`` written in the family's form."""
    if objects is None:
        return messages
    refs = iter(objects.refs)
    boxes = iter(zip(objects.boxes, objects.image_ids))

    def fill(match: re.Match) -> str:
        if match.group() == REF:
            return render_ref(next(refs), fmt)
        box, image = next(boxes)
        return render_box(model_box(box, spaces[image], fmt), fmt)

    pattern = re.compile(f"{re.escape(REF)}|{re.escape(BOX)}")
    out = []
    for message in messages:
        content = message.get("content")
        out.append({**message, "content": pattern.sub(fill, content)} if isinstance(content, str) else message)
    return out


def grounded_messages(
    processor: Any, messages: list[dict], objects: dict, sizes: list[tuple[int, int]], family: str | None
) -> list[dict]:
    """A record's messages with its ``objects`` written for ``family``; ``sizes`` are its images' (height, width)."""
    spaces = [image_space(processor, height, width) for height, width in sizes]
    return render_objects(messages, read_objects({"objects": objects}, sizes), box_format(family), spaces)


def placeholder_counts(messages: list[dict]) -> tuple[int, int]:
    """``(refs, boxes)``: how many placeholders of each kind ``messages`` hold."""
    texts = [m["content"] for m in messages if isinstance(m.get("content"), str)]
    return sum(t.count(REF) for t in texts), sum(t.count(BOX) for t in texts)


def split_objects(objects: Objects, prompt: list[dict]) -> tuple[Objects, Objects]:
    """The objects the ``prompt`` messages use, and the rest (those of the answer after it)."""
    n_refs, n_boxes = placeholder_counts(prompt)
    first = Objects(objects.refs[:n_refs], objects.boxes[:n_boxes], objects.image_ids[:n_boxes])
    rest = Objects(objects.refs[n_refs:], objects.boxes[n_boxes:], objects.image_ids[n_boxes:])
    return first, rest


def eval_parts(
    messages: list[dict],
    reference: str,
    objects: dict,
    sizes: list[tuple[int, int]],
    processor: Any,
    family: str | None,
) -> tuple[list[dict], str, Any]:
    """An evaluation sample written for ``family``: its prompt, its reference answer and the answer's boxes
    (a :class:`lab.box_answers.BoxTarget`, None where the answer has none).

    The prompt takes the first refs and boxes (as many as its placeholders), the reference the
    rest. Answers are read in the space of the image the first answer box belongs to.
    """
    fmt = box_format(family)
    spaces = [image_space(processor, height, width) for height, width in sizes]
    asked, answered = split_objects(read_objects({"objects": objects}, sizes), messages)
    prompt = render_objects(messages, asked, fmt, spaces)
    answer = render_objects([{"role": "assistant", "content": reference}], answered, fmt, spaces)[0]["content"]
    if not answered.boxes:
        return prompt, answer, None
    from lab.box_answers import BoxTarget

    return prompt, answer, BoxTarget(answered.boxes, fmt, spaces[answered.image_ids[0]])


# ---------------------------------------------------------------- labeled answers


def labeled_objects(parsed: Any, width: int, height: int) -> tuple[str, dict] | None:
    """A labeler's ``{"objects": [{"ref": ..., "bbox": [x1, y1, x2, y2]}]}`` (0-1000 grid) as a record's parts.

    Returns the answer with placeholders (one ``<ref-object><bbox>`` line per object) and the
    ``objects`` field in original pixels; None when the answer holds no usable box.
    """
    items = parsed.get("objects") if isinstance(parsed, dict) else None
    if not isinstance(items, list):
        return None
    refs, boxes = [], []
    for item in items:
        box = item.get("bbox") if isinstance(item, dict) else None
        if not isinstance(item, dict) or not isinstance(item.get("ref"), str) or not _is_box(box):
            return None
        x1, y1, x2, y2 = (min(max(float(v), 0.0), GRID) for v in box)
        if not (x1 < x2 and y1 < y2):
            return None
        refs.append(item["ref"].strip())
        boxes.append(
            [
                round(x1 * width / GRID, 1),
                round(y1 * height / GRID, 1),
                round(x2 * width / GRID, 1),
                round(y2 * height / GRID, 1),
            ]
        )
    if not boxes:
        return None
    return "\n".join([REF + BOX] * len(boxes)), {"ref": refs, "bbox": boxes}
