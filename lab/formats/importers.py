"""Reading another tool's dataset into a new dataset folder of our own form.

The format is detected from the folder's files and the first record when not given;
images (files, or base64 ``data:`` URLs in OpenAI rows) are copied into ``images/``.
"""

from __future__ import annotations

import os
from pathlib import Path

from lab import paths
from lab.dataset import DATA_FILE, write_records
from lab.errors import DatasetError
from lab.formats.layout import (
    ImageStore,
    VideoStore,
    check_format,
    fresh_out_dir,
    source_image,
)
from lab.formats.readers import READERS, read_messages_records, read_rows, source_file


def import_dataset(src: str | Path, fmt: str | None, out_dir: str | Path, bundle: str | Path | None = None) -> Path:
    """Read ``src`` in format ``fmt`` (detected when ``None``) into the new dataset folder ``out_dir``.

    Returns ``out_dir``, which then holds ``data.jsonl`` and ``images/``. ``bundle`` is the
    folder the caller unpacked an upload into (``src`` lies in it): a record may then only
    name images inside it, so an uploaded file cannot copy the server's files into the
    workspace. A ``src`` a person names goes through :func:`lab.paths.check_allowed`, and on a
    shared deployment its images must lie in its own folder. Data URLs are always fine.
    """
    src = Path(src).expanduser()
    if bundle is None:
        src = paths.check_allowed(src)
        bundle = (src if src.is_dir() else src.parent) if paths.restricted() else None
    if not src.exists():
        raise DatasetError("Nothing to import: {src} does not exist.", src=src)
    fmt = check_format(fmt) if fmt else detect_format(src)
    try:
        records = READERS.get(fmt, read_messages_records)(src)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        # Foreign files break in many small ways; the exception still says where.
        raise DatasetError(
            "{src} is not valid {fmt} data ({err_type}: {err}).", src=src, fmt=fmt, err_type=type(err).__name__, err=err
        ) from None
    if not records:
        raise DatasetError("{src} holds no records; there is nothing to import.", src=src)
    width = max(4, len(str(len(records))))
    with fresh_out_dir(out_dir) as out:
        store, videos = ImageStore(out), VideoStore(out)
        for n, record in enumerate(records, start=1):
            record.setdefault("id", f"{n:0{width}d}")
            stored = []
            for k, image in enumerate(record["images"]):
                if isinstance(image, tuple):  # a decoded data URL: (bytes, extension)
                    name = f"{record['id']}_{k}" if len(record["images"]) > 1 else record["id"]
                    stored.append(store.add(image[0], name + image[1]))
                else:
                    inside_bundle(image, bundle, n)
                    stored.append(store.add(_image_file(image, bundle, n), Path(image).name))
            record["images"] = stored
            for video in record.get("videos") or []:
                inside_bundle(video, bundle, n)
            if record.get("videos"):
                record["videos"] = [videos.add(video) for video in record["videos"]]
        write_records(out / DATA_FILE, records)
    return out


def inside_bundle(image: str, bundle: str | Path | None, number: int) -> None:
    """Refuse an image of record ``number`` that lies outside ``bundle`` (``..``, absolute, a link out).

    Decided from the path alone, before the file is opened, so the sentence is the same
    whether such a file exists or not.
    """
    if bundle is None or Path(image).resolve().is_relative_to(Path(bundle).resolve()):
        return
    shown = os.path.relpath(image, bundle) if image.startswith(str(bundle)) else image  # as the record wrote it
    raise DatasetError(
        "Record {number} names an image outside the imported files ({shown}); "
        "only images that come with the dataset can be imported.",
        number=number,
        shown=shown,
    )


def _image_file(image: str, bundle: str | Path | None, number: int) -> Path:
    """The file of an image record ``number`` names. In an upload it may lie where the upload put it: a
    .json uploaded with a .zip of its images finds them in the folder the zip unpacked into."""
    if bundle is None or Path(image).is_file():
        return source_image(image)
    found = find_in_bundle(Path(image), Path(bundle))
    if found is None:
        raise DatasetError(
            "Record {number} names the image {image}, which is not in the upload; upload the .json "
            "together with a .zip of its images, or one .zip of the whole dataset folder.",
            number=number,
            image=os.path.relpath(image, bundle),
        )
    return found


def find_in_bundle(image: Path, bundle: Path) -> Path | None:
    """The one file in ``bundle`` whose path ends like ``image`` (its folders and name), the longest such
    ending first; None when there is none, or more than one of the shortest."""
    files = [p for p in bundle.rglob("*") if p.is_file() and not p.is_symlink()]
    parts = (
        image.resolve().relative_to(bundle.resolve()).parts
        if image.resolve().is_relative_to(bundle.resolve())
        else image.parts[-1:]
    )
    for n in range(len(parts), 0, -1):
        matches = [p for p in files if p.parts[-n:] == parts[-n:]]
        if len(matches) == 1:
            return matches[0]
    return None


def upload_source(entries: list[Path]) -> Path:
    """What to import from an upload's entries: its one records file (a .json or .jsonl, which may come with
    a .zip of its images), else the folder of its one zip (or the single folder at the top of that zip)."""
    files = [p for p in entries if p.is_file() and p.suffix.lower() in (".json", ".jsonl")]
    folders = [p for p in entries if p.is_dir()]
    if len(files) == 1:
        return files[0]
    if not files and len(folders) == 1:
        inside = [p for p in folders[0].iterdir() if not p.name.startswith(("__MACOSX", "."))]
        return inside[0] if len(inside) == 1 and inside[0].is_dir() else folders[0]
    raise DatasetError(
        "Upload one .json or .jsonl file (with a .zip of its images if it names any), or one .zip of a dataset folder."
    )


def detect_format(src: str | Path) -> str:
    """Guess the format of ``src`` (a folder or a file) from its files and its first record."""
    src = Path(src)
    if src.is_dir():
        if (src / "dataset_info.json").is_file():
            return "llamafactory"
        if (src / "metadata.jsonl").is_file():
            return "imagefolder"
        src = source_file(src)
    rows = read_rows(src, limit=1)
    first = rows[0] if rows else {}
    if "conversations" in first:
        return "llamafactory"
    if "file_name" in first or "file_names" in first:
        return "imagefolder"
    if any(isinstance(m, dict) and isinstance(m.get("content"), list) for m in first.get("messages") or []):
        return "openai"
    if "messages" in first or "query" in first:
        return "swift"
    raise DatasetError("Cannot tell the format of {src}; choose the format explicitly.", src=src)
