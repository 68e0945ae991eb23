"""Opening user images safely.

Every image that enters the lab (labeling, dataset checks, training, chat) goes
through :func:`open_image`, which either returns an 8-bit RGB picture the right way
up or raises :class:`~lab.errors.BadImageError` with a short reason. Bad files never
crash a batch: callers catch the error, record the reason and go on.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lab.errors import BadImageError
from lab.text import Msg

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

# A decompression-bomb guard of our own, well above any real photo or screenshot
# (a 20000x20000 image is 400 MP) but far below what would exhaust a laptop's memory.
MAX_IMAGE_PIXELS = 64_000_000
# EXIF orientations 5-8 rotate by 90 degrees, which swaps width and height.
_SWAPPED_ORIENTATIONS = {5, 6, 7, 8}


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` or below it, sorted for a stable order."""
    from lab.paths import check_allowed, is_allowed

    folder = check_allowed(Path(folder))
    found = (p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and is_allowed(p))
    return sorted(p for p in found if p.is_file())


def open_image(path: str | Path, max_pixels: int | None = None, draft: tuple[int, int] | None = None) -> Image.Image:
    """Open ``path`` as an upright 8-bit RGB image, optionally downscaled to ``max_pixels``.

    ``draft`` (width, height) lets a JPEG be decoded at a reduced scale no smaller than that
    size, several times faster when only a thumbnail is wanted; other formats ignore it.
    """
    path = Path(path)
    if not path.is_file():
        raise BadImageError(path, Msg("file not found"))
    if path.stat().st_size == 0:
        raise BadImageError(path, Msg("empty file (0 bytes)"))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                width, height = im.size
                if width * height > MAX_IMAGE_PIXELS:
                    raise BadImageError(
                        path,
                        Msg(
                            "image too large ({width}x{height} pixels, limit {max_image_pixels:,})",
                            width=width,
                            height=height,
                            max_image_pixels=MAX_IMAGE_PIXELS,
                        ),
                    )
                im.seek(0)  # animated GIF/WebP: label the first frame
                if draft:
                    im.draft("RGB", draft)
                im.load()
                upright = ImageOps.exif_transpose(im)
                rgb = to_rgb(upright)
    except BadImageError:
        raise
    except Image.DecompressionBombError:
        raise BadImageError(
            path, Msg("image too large (more than {max_image_pixels:,} pixels)", max_image_pixels=MAX_IMAGE_PIXELS)
        ) from None
    except UnidentifiedImageError:
        raise BadImageError(path, Msg("not an image, or an image format that cannot be read")) from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise BadImageError(path, Msg("truncated or corrupt image ({err})", err=err)) from None
    return downscale(rgb, max_pixels) if max_pixels else rgb


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; transparency is laid on white."""
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") else max(float(arr.max()), 1.0)
        arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
        return Image.fromarray(arr, mode="L").convert("RGB")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def downscale(im: Image.Image, max_pixels: int) -> Image.Image:
    """Shrink ``im`` (keeping its aspect ratio) so that width*height <= max_pixels."""
    width, height = im.size
    if width * height <= max_pixels:
        return im
    scale = math.sqrt(max_pixels / (width * height))
    size = (max(1, int(width * scale)), max(1, int(height * scale)))
    return im.resize(size, Image.Resampling.LANCZOS)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(height, width)`` of an image as :func:`lab.images.open_image` will return it, read from its header."""
    try:
        with Image.open(path) as im:
            width, height = im.size
            orientation = im.getexif().get(0x0112, 1)
    except FileNotFoundError:
        raise BadImageError(path, Msg("file not found")) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise BadImageError(path, Msg("not a readable image ({err})", err=err)) from None
    return (width, height) if orientation in _SWAPPED_ORIENTATIONS else (height, width)
