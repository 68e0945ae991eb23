"""A dataset's records in pages, each image shown as a small cached thumbnail.

A gallery that sends every full image makes many visitors on a shared server wait on
disk and network for pictures shown 100 pixels wide. A page holds :data:`PAGE_SIZE`
records; each of their images is shown as a JPEG thumbnail of at most
:data:`THUMB_SIDE` pixels a side, made once and kept in the workspace under
``.cache/thumbnails/``. A thumbnail's name comes from the image's resolved path, its
modification time and size, so an image that changes gets a new one (and the old one is
removed); an image that cannot be read is left out of the page and named with its reason.
A record with boxes (``objects``, :mod:`lab.grounding`) has them drawn on its thumbnails,
each with its phrase, so a wrong box shows at a glance.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw

from lab import paths
from lab.dataset import load_records
from lab.errors import BadImageError, LabError
from lab.images import open_image
from lab.text import Msg, msg_of

PAGE_SIZE = 24
THUMB_SIDE = 256


def thumbnail_dir() -> Path:
    return paths.workspace() / ".cache" / "thumbnails"


def thumbnail(image: str | Path, side: int = THUMB_SIDE, boxes: list[tuple[str, list[float]]] = ()) -> Path:
    """The cached thumbnail of ``image``, made now if it is missing or the image changed.

    ``boxes`` (phrase, ``[x1, y1, x2, y2]`` in the image's pixels) are drawn on it; a
    thumbnail with boxes is kept apart from the plain one. Raises
    :class:`~lab.errors.BadImageError` (or the path guard's :class:`LabError`) for an image
    that cannot be shown.
    """
    image = paths.check_allowed(Path(image)).resolve()
    try:
        stat = image.stat()
    except OSError:
        raise BadImageError(image, Msg("file not found")) from None
    drawn = json.dumps([[ref, list(box)] for ref, box in boxes], ensure_ascii=False) if boxes else ""
    key = hashlib.sha256(f"{image}\0{drawn}".encode() if drawn else str(image).encode()).hexdigest()[:24]
    version = hashlib.sha256(f"{stat.st_mtime_ns}:{stat.st_size}:{side}".encode()).hexdigest()[:12]
    target = thumbnail_dir() / key[:2] / f"{key}-{version}.jpg"
    if target.is_file():
        return target
    full = open_image(image, draft=(side, side) if not boxes else None)
    picture = full.copy()
    picture.thumbnail((side, side))
    if boxes:
        draw_boxes(picture, boxes, picture.width / full.width, picture.height / full.height)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written under a private name and renamed, so a visitor never gets half a file from another's request.
    partial = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}")
    picture.save(partial, "JPEG", quality=85)
    os.replace(partial, target)
    for stale in target.parent.glob(f"{key}-*.jpg"):
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


BOX_COLORS = ((230, 40, 40), (30, 120, 230), (20, 160, 70), (235, 140, 0), (150, 60, 210))


def draw_boxes(picture: Image.Image, boxes: list[tuple[str, list[float]]], sx: float, sy: float) -> None:
    """Draw ``boxes`` (in original pixels, scaled by ``sx``/``sy``) on ``picture``, each labeled with its phrase."""
    draw = ImageDraw.Draw(picture)
    for n, (ref, box) in enumerate(boxes):
        color = BOX_COLORS[n % len(BOX_COLORS)]
        x1, y1, x2, y2 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
        draw.rectangle((x1, y1, x2, y2), outline=color, width=2)
        if ref:
            left, top, right, bottom = draw.textbbox((0, 0), ref)
            y = y1 - (bottom - top) - 3 if y1 >= bottom - top + 3 else y2 + 1
            draw.rectangle((x1, y, x1 + right - left + 3, y + bottom - top + 2), fill=color)
            draw.text((x1 + 2, y + 1 - top), ref, fill=(255, 255, 255))


def record_boxes(record: dict, image_index: int) -> list[tuple[str, list[float]]]:
    """The boxes of a record's ``image_index``-th image with their phrases (a phrase per box when they pair up)."""
    objects = record.get("objects")
    if not isinstance(objects, dict) or not objects.get("bbox"):
        return []
    from lab.grounding import read_objects
    from lab.images import image_size

    images = record.get("images") or []
    try:
        sizes = [image_size(p) for p in images]
        found = read_objects(record, sizes)
    except (LabError, TypeError, ValueError, IndexError):
        return []  # the check reports a malformed record; the picture is still shown
    refs = found.refs if len(found.refs) == len(found.boxes) else [""] * len(found.boxes)
    return [(ref, box) for ref, box, image in zip(refs, found.boxes, found.image_ids) if image == image_index]


@dataclass
class DatasetPage:
    """One page of a dataset: its records, their thumbnails (path, record id), what was left out."""

    number: int
    pages: int
    records: list[dict]
    images: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[Msg] = field(default_factory=list)


def page_count(total: int, per_page: int = PAGE_SIZE) -> int:
    return max(1, -(-total // per_page))


def dataset_page(path: str | Path, number: int, per_page: int = PAGE_SIZE) -> DatasetPage:
    """Page ``number`` (from 1; out-of-range numbers are brought to the first or last page)."""
    records = load_records(path, absolute_images=True)
    pages = page_count(len(records), per_page)
    number = min(max(1, int(number)), pages)
    page = DatasetPage(number, pages, records[(number - 1) * per_page : number * per_page])
    for record in page.records:
        for index, image in enumerate(record.get("images") or []):
            try:
                page.images.append(
                    (str(thumbnail(image, boxes=record_boxes(record, index))), str(record.get("id", "")))
                )
            except LabError as err:
                page.skipped.append(msg_of(err))
    return page
