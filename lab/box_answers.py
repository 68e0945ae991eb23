"""Boxes read back from a model's answer and scored against the record's boxes.

An answer's boxes are read in the family's form (Qwen's ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>``),
as the same pairs without the tokens, or as a JSON ``[x1, y1, x2, y2]`` list, in the family's
coordinates (:mod:`lab.grounding`), and turned into original pixels; :func:`box_scores` pairs
them with the reference boxes (``box_iou``, ``box_acc50``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lab.grounding import BOX, REF, BoxFormat, ImageSpace

_NUMBER = r"\s*(-?\d+(?:\.\d+)?)\s*"
_TOKEN_BOX = re.compile(
    r"<\|box_start\|>\s*\(" + _NUMBER + "," + _NUMBER + r"\)\s*,\s*\(" + _NUMBER + "," + _NUMBER + r"\)\s*<\|box_end\|>"
)
_PAIR_BOX = re.compile(r"\(" + _NUMBER + "," + _NUMBER + r"\)\s*,\s*\(" + _NUMBER + "," + _NUMBER + r"\)")
_JSON_BOX = re.compile(r"\[" + _NUMBER + "," + _NUMBER + "," + _NUMBER + "," + _NUMBER + r"\]")
_REF_SPAN = re.compile(r"<\|object_ref_start\|>(.*?)<\|object_ref_end\|>", re.S)


def answer_boxes(text: str, fmt: BoxFormat, space: ImageSpace) -> list[list[float]]:
    """The boxes of an answer, in original pixels, in the order they appear.

    Qwen's ``<|box_start|>(x1,y1),(x2,y2)<|box_end|>``, the same pairs without the tokens, and
    JSON ``[x1, y1, x2, y2]`` lists are read, all in the family's coordinates.
    """
    found: list[tuple[int, list[float]]] = []
    rest = text
    for pattern in (_TOKEN_BOX, _PAIR_BOX, _JSON_BOX):
        for match in pattern.finditer(rest):
            found.append((match.start(), [float(v) for v in match.groups()]))
        rest = pattern.sub(lambda m: " " * len(m.group()), rest)  # same length: positions stay comparable
    sx, sy = space.scale(fmt)
    return [[b[0] / sx, b[1] / sy, b[2] / sx, b[3] / sy] for _, b in sorted(found, key=lambda item: item[0])]


def unrender(text: str) -> tuple[str, list[str], list[list[float]]]:
    """Qwen's token form back to placeholders: ``(text, refs, grid boxes)`` (LLaMA-Factory imports)."""
    refs: list[str] = []
    boxes: list[list[float]] = []

    def ref(match: re.Match) -> str:
        refs.append(match.group(1))
        return REF

    def box(match: re.Match) -> str:
        boxes.append([float(v) for v in match.groups()])
        return BOX

    return _TOKEN_BOX.sub(box, _REF_SPAN.sub(ref, text)), refs, boxes


# ---------------------------------------------------------------- scores


def iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two ``[x1, y1, x2, y2]`` boxes (0 for boxes without area)."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(0.0, width) * max(0.0, height)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def box_scores(predicted: list[list[float]], reference: list[list[float]]) -> dict[str, float]:
    """``box_iou`` and ``box_acc50`` (0-100) of the predicted boxes against the reference ones.

    Boxes are paired one to one, the best overlapping pair first. Both scores are divided
    by the larger of the two counts, so a missing box and an extra box cost alike; with one
    box each they are the plain IoU and whether it reaches 0.5.
    """
    pairs = sorted(((iou(p, r), i, j) for i, p in enumerate(predicted) for j, r in enumerate(reference)), reverse=True)
    used_p, used_r, matched = set(), set(), []
    for overlap, i, j in pairs:
        if i not in used_p and j not in used_r and overlap > 0:
            used_p.add(i)
            used_r.add(j)
            matched.append(overlap)
    count = max(len(predicted), len(reference))
    if not count:
        return {"box_iou": 100.0, "box_acc50": 100.0}
    return {"box_iou": 100.0 * sum(matched) / count, "box_acc50": 100.0 * sum(m >= 0.5 for m in matched) / count}


@dataclass
class BoxTarget:
    """A sample's reference boxes (original pixels) and how its answers write boxes."""

    boxes: list[list[float]]
    fmt: BoxFormat
    space: ImageSpace

    def scores(self, answer: str) -> dict[str, float]:
        return box_scores(answer_boxes(answer, self.fmt, self.space), self.boxes)
