"""OpenAI's rules for vision fine-tuning files: images made to follow them, and a file checked against them.

The rules, from the vision fine-tuning guide's "Image data requirements"
(developers.openai.com/api/docs/guides/vision-fine-tuning): a training file holds at most
50,000 examples with images, an example at most 10 images, an image at most 10 MB, in JPEG,
PNG or WEBP, in the RGB or RGBA mode, and no image in an ``assistant`` message. The chat
fine-tuning format adds that every line is an object with ``messages`` and at least one
``assistant`` message. The export follows them (:func:`openai_image`); :func:`openai_faults`
checks a written file without any network, so a test holds the export to them.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from io import BytesIO
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from lab.images import MAX_IMAGE_PIXELS, open_image, to_rgb
from lab.text import Msg

MAX_EXAMPLES_WITH_IMAGES = 50_000
MAX_IMAGES_PER_EXAMPLE = 10
MAX_IMAGE_BYTES = 10_000_000  # "10 MB"; the decimal reading is the stricter one
IMAGE_MIME = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
IMAGE_MODES = ("RGB", "RGBA")
ROLES = ("system", "developer", "user", "assistant", "tool")

# What an image may need to follow the rules; an export counts each kind (an image may need several).
CONVERSIONS = ("mode", "format", "size")
_DATA_URL = re.compile(r"data:(?P<mime>[\w/+.-]+);base64,(?P<data>.*)", re.S)


def openai_image(path: str | Path) -> tuple[str, bytes, tuple[str, ...]]:
    """The image at ``path`` as OpenAI takes it: (MIME type, bytes, the kinds of conversion it needed).

    An image that already follows the rules keeps its exact bytes; any other is decoded (the
    first frame of an animation, turned upright) and written again: another mode becomes RGBA
    when it has transparency, else RGB; another format becomes PNG; an image over 10 MB is
    scaled down until it fits.
    """
    path = Path(path)
    raw = path.read_bytes()
    image = _decoded(path, raw)
    source_format = image.format
    if source_format in IMAGE_MIME and image.mode in IMAGE_MODES and len(raw) <= MAX_IMAGE_BYTES:
        return IMAGE_MIME[source_format], raw, ()
    kinds = []
    picture = ImageOps.exif_transpose(image)  # the EXIF that turned it is not written again
    if picture.mode not in IMAGE_MODES:
        picture, kinds = _rgb_or_rgba(picture), ["mode"]
    fmt = source_format if source_format in IMAGE_MIME else "PNG"
    if fmt != source_format:
        kinds.append("format")
    data = _encoded(picture, fmt)
    if len(data) > MAX_IMAGE_BYTES:
        kinds.append("size")
    while len(data) > MAX_IMAGE_BYTES:
        scale = math.sqrt(MAX_IMAGE_BYTES / len(data)) * 0.9
        size = (max(1, int(picture.width * scale)), max(1, int(picture.height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
        data = _encoded(picture, fmt)
    return IMAGE_MIME[fmt], data, tuple(kinds)


def conversion_note(kind: str, n: int) -> Msg:
    """How many images needed conversion ``kind`` (one of :data:`CONVERSIONS`), and why."""
    if kind == "mode":
        return Msg("{n} image(s) converted to RGB or RGBA (OpenAI takes no other image mode)", n=n)
    if kind == "format":
        return Msg("{n} image(s) re-encoded as PNG (OpenAI takes JPEG, PNG and WEBP only)", n=n)
    return Msg("{n} image(s) made smaller to fit OpenAI's 10 MB per image", n=n)


def _decoded(path: Path, raw: bytes) -> Image.Image:
    """The first frame of the image in ``raw``; what cannot be read is a BadImageError with its reason."""
    try:
        image = Image.open(BytesIO(raw))
        if image.width * image.height > MAX_IMAGE_PIXELS:
            raise ValueError("too large")
        image.seek(0)
        image.load()
        return image
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        open_image(path)  # raises the reason as one sentence
        raise


def _rgb_or_rgba(image: Image.Image) -> Image.Image:
    transparent = image.mode in ("LA", "La", "PA", "RGBa") or "transparency" in image.info
    return image.convert("RGBA") if transparent else to_rgb(image)


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = BytesIO()
    options = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}.get(fmt, {})
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def openai_faults(path: str | Path) -> list[Msg]:
    """Every way the chat fine-tuning file at ``path`` breaks the rules above, each with its line."""
    faults, with_images = [], 0
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    for number, line in enumerate(lines, start=1):
        try:
            row = json.loads(line)
            messages = row["messages"]
            problems, images = _example_faults(messages)
        except (ValueError, KeyError, TypeError, AttributeError):
            problems, images = [Msg("not an object with a list of messages")], 0
        with_images += images > 0
        faults += [Msg("line {line}: {problem}", line=number, problem=problem) for problem in problems]
    if with_images > MAX_EXAMPLES_WITH_IMAGES:
        faults.append(
            Msg(
                "{n} examples have images; OpenAI takes at most {limit}.", n=with_images, limit=MAX_EXAMPLES_WITH_IMAGES
            )
        )
    return faults


def _example_faults(messages: list) -> tuple[list[Msg], int]:
    """The faults of one example's messages, and how many images it has."""
    faults, images = [], 0
    roles = [message["role"] for message in messages]
    faults += [Msg("unknown role {role!r}", role=role) for role in roles if role not in ROLES]
    if "assistant" not in roles:
        faults.append(Msg("no assistant message"))
    for message in messages:
        parts = message["content"] if isinstance(message["content"], list) else []
        for part in (p for p in parts if p.get("type") == "image_url"):
            images += 1
            if message["role"] != "user":
                faults.append(Msg("an image in a message of role {role}", role=message["role"]))
            faults += _image_faults(part["image_url"]["url"])
    if images > MAX_IMAGES_PER_EXAMPLE:
        faults.append(
            Msg("{n} images; OpenAI takes at most {limit} per example", n=images, limit=MAX_IMAGES_PER_EXAMPLE)
        )
    return faults, images


def _image_faults(url: str) -> list[Msg]:
    if url.startswith(("http://", "https://")):
        return []  # fetched by OpenAI; nothing to check here without the network
    found = _DATA_URL.fullmatch(url)
    try:
        raw = base64.b64decode(found["data"], validate=True) if found else b""
        image = Image.open(BytesIO(raw))
    except (binascii.Error, UnidentifiedImageError, OSError):
        return [Msg("an image that is neither a URL nor a base64 data URL of an image")]
    faults = []
    if len(raw) > MAX_IMAGE_BYTES:
        faults.append(Msg("an image of {size} bytes, over OpenAI's 10 MB", size=len(raw)))
    if image.format not in IMAGE_MIME:
        faults.append(Msg("a {fmt} image; OpenAI takes JPEG, PNG or WEBP", fmt=image.format))
    if image.mode not in IMAGE_MODES:
        faults.append(Msg("an image in mode {mode}; OpenAI takes RGB or RGBA", mode=image.mode))
    return faults
