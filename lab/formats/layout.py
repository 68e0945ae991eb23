"""What exporters and importers share: the format names, LLaMA-Factory's tags, and the new
dataset folder they write, with its images copied in once each under unique names."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lab.errors import ConfigError, DatasetError
from lab.paths import check_allowed

FORMATS = ("llamafactory", "imagefolder", "openai", "swift")

LLAMAFACTORY_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "system_tag": "system",
}
ROLE_TO_LF = {"system": "system_tag", "user": "user_tag", "assistant": "assistant_tag", "tool": "observation_tag"}
MIME_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}


class ImageStore:
    """Copies images into ``<out_dir>/images/``, once per distinct content, under unique names."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.by_hash: dict[str, str] = {}
        self.names: set[str] = set()

    def add(self, data: bytes | Path, name: str) -> str:
        """Store ``data`` (bytes or a file) preferably as ``images/<name>``; returns the relative path."""
        raw = data.read_bytes() if isinstance(data, Path) else data
        digest = hashlib.sha256(raw).hexdigest()
        if digest in self.by_hash:
            return self.by_hash[digest]
        # Names may come from record ids; keep them to one plain path component.
        stem = re.sub(r"[^\w.-]+", "_", Path(name).stem).strip(".") or "image"
        suffix = re.sub(r"[^\w.]+", "", Path(name).suffix)
        candidate, n = f"{stem}{suffix}", 1
        while candidate.lower() in self.names:
            candidate, n = f"{stem}_{n}{suffix}", n + 1
        self.names.add(candidate.lower())
        target = self.out_dir / "images" / candidate
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Path):
            shutil.copyfile(data, target)
        else:
            target.write_bytes(raw)
        self.by_hash[digest] = f"images/{candidate}"
        return self.by_hash[digest]


class VideoStore:
    """Copies videos (files, or folders of frames) into ``<out_dir>/videos/`` under unique names."""

    def __init__(self, out_dir: Path):
        self.out_dir = out_dir
        self.done: dict[Path, str] = {}

    def add(self, source: str | Path) -> str:
        """Copy the video at ``source`` once; returns its path relative to ``out_dir``."""
        source = Path(source)
        if not source.exists():
            raise DatasetError("Video {video} not found.", video=source)
        if source.resolve() in self.done:
            return self.done[source.resolve()]
        stem = re.sub(r"[^\w.-]+", "_", source.name).strip(".") or "video"
        candidate, n = stem, 1
        while (self.out_dir / "videos" / candidate).exists():
            candidate, n = f"{Path(stem).stem}_{n}{Path(stem).suffix}", n + 1
        target = self.out_dir / "videos" / candidate
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, target, symlinks=False)
        else:
            shutil.copyfile(source, target)
        self.done[source.resolve()] = f"videos/{candidate}"
        return self.done[source.resolve()]


@contextmanager
def fresh_out_dir(out_dir: str | Path) -> Iterator[Path]:
    """A new or empty folder to write into, removed again if writing fails half way."""
    out = check_allowed(Path(out_dir).expanduser(), write=True)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError("The output folder {out} is not empty; choose a new or empty folder.", out=out)
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        yield out
    except BaseException:
        # Everything in it is ours (it was empty), and a half-written folder would only
        # make the retry fail with "not empty".
        shutil.rmtree(out, ignore_errors=True)
        if existed:
            out.mkdir()
        raise


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`FORMATS`, else a :class:`ConfigError` listing them."""
    if fmt not in FORMATS:
        choices = ", ".join(FORMATS)
        raise ConfigError("Unknown dataset format {fmt!r}; choose one of {choices}.", fmt=fmt, choices=choices)
    return fmt


def source_image(path: str) -> Path:
    """The image file at ``path``, which must exist."""
    image = Path(path)
    if not image.is_file():
        raise DatasetError("Image {image} not found.", image=image)
    return image
