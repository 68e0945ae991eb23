"""The records of another tool's dataset files, one reader per format, as our records (messages, images,
and the row's id, meta, boxes and videos); :mod:`lab.formats.importers` copies them into a dataset folder.

ms-swift and OpenAI chat rows (:func:`read_messages_records`), LLaMA-Factory's sharegpt entries
named by ``dataset_info.json`` (:func:`read_llamafactory`, Qwen's box tokens back to placeholders),
and HF imagefolder's ``metadata.jsonl`` (:func:`read_imagefolder`). An image is a path, or a
decoded ``data:`` URL as ``(bytes, extension)``.
"""

from __future__ import annotations

import base64
import json
import mimetypes
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lab.conversation import IMAGE_PLACEHOLDER
from lab.dataset import DATA_FILE, image_entry
from lab.errors import DatasetError
from lab.formats.layout import LLAMAFACTORY_TAGS, MIME_EXT, ROLE_TO_LF

_DATA_URL = re.compile(r"data:(?P<mime>[\w/+.-]+);base64,(?P<data>.*)", re.S)


def source_file(src: Path) -> Path:
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


def read_rows(file: Path, limit: int | None = None) -> list[dict]:
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


def read_messages_records(src: Path) -> list[dict]:
    """ms-swift rows (``messages`` or ``query``/``response``/``history``) and OpenAI chat rows."""
    file = source_file(src)
    records = []
    for number, row in enumerate(read_rows(file), start=1):
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


def read_llamafactory(src: Path) -> list[dict]:
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
    for number, row in enumerate(read_rows(data), start=1):
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


def read_imagefolder(src: Path) -> list[dict]:
    metadata = src / "metadata.jsonl" if src.is_dir() else src
    if not metadata.is_file():
        raise DatasetError("{src} has no metadata.jsonl.", src=src)
    records = []
    for number, row in enumerate(read_rows(metadata), start=1):
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


READERS: dict[str, Callable[[Path], list[dict]]] = {
    "llamafactory": read_llamafactory,
    "imagefolder": read_imagefolder,
}  # any other format: read_messages_records
