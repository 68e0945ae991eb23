"""Reading another tool's dataset into a new dataset folder of our own form.

The format is detected from the folder's files and the first record when not given;
images (files, or base64 ``data:`` URLs in OpenAI rows) are copied into ``images/``.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import os
import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lab import paths
from lab.conversation import IMAGE_PLACEHOLDER
from lab.dataset import DATA_FILE, image_entry, write_records
from lab.errors import DatasetError
from lab.formats.layout import (
    LLAMAFACTORY_TAGS,
    MIME_EXT,
    ROLE_TO_LF,
    ImageStore,
    VideoStore,
    check_format,
    fresh_out_dir,
    source_image,
)

_DATA_URL = re.compile(r"data:(?P<mime>[\w/+.-]+);base64,(?P<data>.*)", re.S)


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
    readers = {"llamafactory": _read_llamafactory, "imagefolder": _read_imagefolder}
    try:
        records = readers.get(fmt, _read_messages_records)(src)
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


def _source_file(src: Path) -> Path:
    """The records file of ``src``: the file itself, or a folder's data.jsonl or only JSON(L) file."""
    if src.is_file():
        return src
    if (src / DATA_FILE).is_file():
        return src / DATA_FILE
    candidates = [p for p in src.glob("*.json*") if p.suffix in (".json", ".jsonl")]
    if len(candidates) != 1:
        raise DatasetError(
            "Cannot tell which file in {src} holds the records; name the file, or give a folder with "
            "dataset_info.json, metadata.jsonl or {data_file}.",
            src=src,
            data_file=DATA_FILE,
        )
    return candidates[0]


def detect_format(src: str | Path) -> str:
    """Guess the format of ``src`` (a folder or a file) from its files and its first record."""
    src = Path(src)
    if src.is_dir():
        if (src / "dataset_info.json").is_file():
            return "llamafactory"
        if (src / "metadata.jsonl").is_file():
            return "imagefolder"
        src = _source_file(src)
    rows = _read_rows(src, limit=1)
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


def _read_rows(file: Path, limit: int | None = None) -> list[dict]:
    """Rows of a JSON list file or of a JSONL file."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError("Cannot read {file} ({err}).", file=file, err=err) from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(
                "{file} is not valid JSON ({err_msg} on line {lineno}).", file=file, err_msg=err.msg, lineno=err.lineno
            ) from None
        if not isinstance(rows, list):
            raise DatasetError("{file} is not a JSON list of records.", file=file)
        rows = rows[:limit] if limit else rows
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DatasetError(
                        "Line {number} of {file} is not valid JSON ({err_msg}).",
                        number=number,
                        file=file,
                        err_msg=err.msg,
                    ) from None
                if limit and len(rows) >= limit:
                    break
    if not all(isinstance(row, dict) for row in rows):
        raise DatasetError("{file} has an entry that is not a JSON object.", file=file)
    return rows


def _keep_extras(row: dict, record: dict, folder: Path | None = None) -> dict:
    """``record`` with the row's id, meta, boxes (``objects``, also as a JSON string) and videos."""
    if row.get("id") is not None:
        record["id"] = str(row["id"])
    objects = row.get("objects")
    if isinstance(objects, str) and objects.strip():
        objects = json.loads(objects)
    if objects:
        record["objects"] = objects
    videos = row.get("videos") or []
    if folder is not None and videos:
        record["videos"] = [str(folder / image_entry(v)) for v in ([videos] if isinstance(videos, str) else videos)]
    meta = row.get("meta")
    if isinstance(meta, str):
        try:
            meta = json.loads(meta)
        except json.JSONDecodeError:
            meta = {"note": meta}
    if meta:
        record["meta"] = meta
    return record


def _read_messages_records(src: Path) -> list[dict]:
    """ms-swift rows (``messages`` or ``query``/``response``/``history``) and OpenAI chat rows."""
    file = _source_file(src)
    records = []
    for number, row in enumerate(_read_rows(file), start=1):
        images = row.get("images") or []
        images = [images] if isinstance(images, str) else list(images)
        images = [str(file.parent / image_entry(i)) for i in images]
        if "messages" in row:
            messages = [_from_openai_message(m, images, file, number) for m in row["messages"] or []]
        elif "query" in row:
            messages = _from_query_response(row)
        else:
            raise DatasetError(
                "Record {number} of {file} has neither 'messages' nor 'query'.", number=number, file=file
            )
        records.append(_keep_extras(row, {"messages": messages, "images": images}, file.parent))
    return records


def _from_query_response(row: dict) -> list[dict]:
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    for query, response in row.get("history") or []:
        messages += [{"role": "user", "content": query}, {"role": "assistant", "content": response}]
    messages.append({"role": "user", "content": row["query"]})
    if row.get("response") is not None:
        messages.append({"role": "assistant", "content": row["response"]})
    return messages


def _from_openai_message(message: dict, images: list, file: Path, number: int) -> dict:
    """A message whose content may be OpenAI parts; image parts become ``<image>`` and append to ``images``."""
    if not isinstance(message, dict):
        raise DatasetError("Record {number} of {file} has a message that is not an object.", number=number, file=file)
    content = message.get("content")
    if isinstance(content, list):
        text = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                images.append(_decode_image_url(part.get("image_url"), file, number))
                text.append(IMAGE_PLACEHOLDER)
            elif isinstance(part, dict):
                text.append(str(part.get("text", "")))
        content = "".join(text)
    return {**{k: v for k, v in message.items() if v is not None}, "content": content}


def _decode_image_url(image_url, file: Path, number: int) -> tuple[bytes, str] | str:
    url = image_url.get("url", "") if isinstance(image_url, dict) else str(image_url or "")
    found = _DATA_URL.fullmatch(url.strip())
    if found:
        ext = MIME_EXT.get(found["mime"]) or mimetypes.guess_extension(found["mime"]) or ".img"
        return base64.b64decode(found["data"]), ext
    if url.startswith(("http://", "https://")):
        raise DatasetError(
            "Record {number} of {file} links an image on the web ({url}); download it first.",
            number=number,
            file=file,
            url=url[:60],
        )
    if url.startswith("file:"):
        url = unquote(urlsplit(url).path)  # the path it names; whether it may be used is decided with the others
    return str(file.parent / url)


def _llamafactory_entry(src: Path) -> tuple[Path, dict, Path]:
    """(data file, dataset_info entry, folder the images are relative to) for a folder or a file."""
    folder = src if src.is_dir() else src.parent
    info_file = folder / "dataset_info.json"
    entries = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    for entry in entries.values():
        data = folder / str(entry.get("file_name", ""))
        if not data.resolve().is_relative_to(folder.resolve()):
            continue  # an entry naming a file outside the dataset's folder is not this dataset's
        if data.is_file() and (src.is_dir() or data.resolve() == src.resolve()):
            return data, entry, folder
    if src.is_file():
        return src, {}, folder
    raise DatasetError("{info_file} names no data file that exists in {folder}.", info_file=info_file, folder=folder)


def _read_llamafactory(src: Path) -> list[dict]:
    data, entry, folder = _llamafactory_entry(src)
    if entry.get("formatting", "sharegpt") != "sharegpt":
        kind = entry["formatting"]
        raise DatasetError(
            "{data} is in LLaMA-Factory's {kind} format; only sharegpt is supported.", data=data, kind=kind
        )
    tags = {**LLAMAFACTORY_TAGS, **entry.get("tags", {})}
    columns = {"messages": "conversations", "images": "images", **entry.get("columns", {})}
    to_role = {tags[tag]: role for role, tag in ROLE_TO_LF.items()}
    records = []
    for number, row in enumerate(_read_rows(data), start=1):
        messages = []
        if columns.get("system") and row.get(columns["system"]):
            messages.append({"role": "system", "content": row[columns["system"]]})
        for turn in row.get(columns["messages"]) or []:
            sender = turn[tags["role_tag"]]
            role = to_role.get(sender)
            if role is None:
                raise DatasetError(
                    "Record {number} of {data} has a turn from unknown role {sender!r}.",
                    number=number,
                    data=data,
                    sender=sender,
                )
            messages.append({"role": role, "content": turn.get(tags["content_tag"], "")})
        images = row.get(columns["images"]) or []
        images = [str(folder / image_entry(i)) for i in ([images] if isinstance(images, str) else images)]
        if columns.get("videos") and row.get(columns["videos"]):
            row = {**row, "videos": row[columns["videos"]]}
        record = _keep_extras({k: v for k, v in row.items() if k != "videos"}, {"messages": messages, "images": images})
        records.append(_with_placeholders(record, row, folder))
    return records


def _with_placeholders(record: dict, row: dict, folder: Path) -> dict:
    """Qwen's box tokens in the turns back to ``<ref-object>``/``<bbox>`` and ``objects``.

    The row's own ``objects`` (written by our export) keep the exact boxes; otherwise the
    0-1000 grid is turned into pixels of the record's first image.
    """
    from lab.box_answers import unrender
    from lab.grounding import GRID

    refs: list[str] = []
    boxes: list[list[float]] = []
    for message in record["messages"]:
        message["content"], found_refs, found_boxes = unrender(message["content"])
        refs, boxes = refs + found_refs, boxes + found_boxes
    if row.get("videos"):
        record["videos"] = [str(folder / image_entry(v)) for v in row["videos"]]
    kept = record.get("objects") or {}
    if len(kept.get("ref") or []) == len(refs) and len(kept.get("bbox") or []) == len(boxes):
        return record
    if not record["images"] and boxes:
        raise ValueError("boxes without an image")
    from lab.images import image_size

    height, width = image_size(record["images"][0]) if boxes else (GRID, GRID)
    pixels = [
        [
            round(b[0] * width / GRID, 1),
            round(b[1] * height / GRID, 1),
            round(b[2] * width / GRID, 1),
            round(b[3] * height / GRID, 1),
        ]
        for b in boxes
    ]
    if refs or boxes:
        record["objects"] = {"ref": refs, "bbox": pixels}
    return record


def _read_imagefolder(src: Path) -> list[dict]:
    metadata = src / "metadata.jsonl" if src.is_dir() else src
    if not metadata.is_file():
        raise DatasetError("{src} has no metadata.jsonl.", src=src)
    records = []
    for number, row in enumerate(_read_rows(metadata), start=1):
        names = row.get("file_names") if "file_names" in row else [row.get("file_name")]
        images = [str(metadata.parent / name) for name in names or [] if name]
        messages = row.get("messages")
        if isinstance(messages, str):
            messages = json.loads(messages)
        if not messages:
            messages = _messages_from_text_columns(row, len(images), metadata, number)
        messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
        records.append(
            _keep_extras({k: v for k, v in row.items() if k != "videos"}, {"messages": messages, "images": images})
        )
    return records


def _messages_from_text_columns(row: dict, n_images: int, file: Path, number: int) -> list[dict]:
    """A caption-style row (``text``/``caption``/``answer``, optional ``prompt``/``question``)."""
    answer = next((row[k] for k in ("text", "caption", "answer", "response") if row.get(k)), None)
    if answer is None:
        raise DatasetError(
            "Row {number} of {file} has no 'messages' and no text column (text, caption, answer).",
            number=number,
            file=file,
        )
    prompt = next((row[k] for k in ("prompt", "question", "query") if row.get(k)), "")
    return [
        {"role": "user", "content": IMAGE_PLACEHOLDER * n_images + str(prompt)},
        {"role": "assistant", "content": str(answer)},
    ]
