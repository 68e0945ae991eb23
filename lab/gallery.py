"""A dataset's records in pages, each image shown as a small cached thumbnail.

A gallery that sends every full image makes many visitors on a shared server wait on
disk and network for pictures shown 100 pixels wide. A page holds :data:`PAGE_SIZE`
records; each of their images is shown as a JPEG thumbnail of at most
:data:`THUMB_SIDE` pixels a side, made once and kept in the workspace under
``.cache/thumbnails/``. A thumbnail's name comes from the image's resolved path, its
modification time and size, so an image that changes gets a new one (and the old one is
removed); an image that cannot be read is left out of the page and named with its reason.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from lab import paths
from lab.dataset import load_records
from lab.errors import BadImageError, LabError
from lab.images import open_image
from lab.text import Msg, msg_of

PAGE_SIZE = 24
THUMB_SIDE = 256


def thumbnail_dir() -> Path:
    return paths.workspace() / ".cache" / "thumbnails"


def thumbnail(image: str | Path, side: int = THUMB_SIDE) -> Path:
    """The cached thumbnail of ``image``, made now if it is missing or the image changed.

    Raises :class:`~lab.errors.BadImageError` (or the path guard's :class:`LabError`) for an
    image that cannot be shown.
    """
    image = paths.check_allowed(Path(image)).resolve()
    try:
        stat = image.stat()
    except OSError:
        raise BadImageError(image, Msg("file not found")) from None
    key = hashlib.sha256(str(image).encode()).hexdigest()[:24]
    version = hashlib.sha256(f"{stat.st_mtime_ns}:{stat.st_size}:{side}".encode()).hexdigest()[:12]
    target = thumbnail_dir() / key[:2] / f"{key}-{version}.jpg"
    if target.is_file():
        return target
    picture = open_image(image, draft=(side, side))
    picture.thumbnail((side, side))
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written under a private name and renamed, so a visitor never gets half a file from another's request.
    partial = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}")
    picture.save(partial, "JPEG", quality=85)
    os.replace(partial, target)
    for stale in target.parent.glob(f"{key}-*.jpg"):
        if stale != target:
            stale.unlink(missing_ok=True)
    return target


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
        for image in record.get("images") or []:
            try:
                page.images.append((str(thumbnail(image)), str(record.get("id", ""))))
            except LabError as err:
                page.skipped.append(msg_of(err))
    return page
