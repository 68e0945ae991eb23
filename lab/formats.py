"""Moving datasets to and from other tools' formats (``fmt``).

- ``swift``: our own form (ms-swift ``messages`` + ``images``), ``data.jsonl``; import also reads
  ms-swift JSON lists, absolute image paths and the older ``query``/``response``/``history`` keys.
- ``llamafactory``: sharegpt ``data.json`` (``{"conversations": [{"from": "human", "value":
  "<image>..."}], "images": [...]}``, the system prompt as the first turn) + ``dataset_info.json``.
- ``imagefolder``: Hugging Face ``metadata.jsonl`` with ``file_name`` when every record has one
  image, else ``file_names`` on every row; plus ``id``, ``messages``, ``meta`` (a JSON string).
- ``openai``: chat fine-tuning ``chat.jsonl``; images become base64 ``data:`` URL content parts
  where their ``<image>`` placeholders were.

Exports copy images into ``out_dir/images/`` (``openai`` embeds them) with relative paths;
imports write a dataset folder of our own form. A round trip keeps every record, its
messages, its image bytes, and its id wherever the format has room for one (not ``openai``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import mimetypes
import re
import shutil
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path
from typing import Iterator

from lab.dataset import (
    DATA_FILE, IMAGE_TOKEN, image_entry, load_records, validate_dataset, write_records,
)
from lab.errors import ConfigError, DatasetError

FORMATS = ("llamafactory", "imagefolder", "openai", "swift")

LLAMAFACTORY_TAGS = {
    "role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
    "observation_tag": "observation", "system_tag": "system",
}
_ROLE_TO_LF = {"system": "system_tag", "user": "user_tag", "assistant": "assistant_tag", "tool": "observation_tag"}
_MIME_EXT = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp", "image/gif": ".gif"}
_DATA_URL = re.compile(r"data:(?P<mime>[\w/+.-]+);base64,(?P<data>.*)", re.S)


class _ImageStore:
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


@contextmanager
def _fresh_out_dir(out_dir: str | Path) -> Iterator[Path]:
    """A new or empty folder to write into, removed again if writing fails half way."""
    out = Path(out_dir).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"The output folder {out} is not empty; choose a new or empty folder.")
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


def _check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ConfigError(f"Unknown dataset format {fmt!r}; choose one of {', '.join(FORMATS)}.")
    return fmt


def _source_image(path: str) -> Path:
    image = Path(path)
    if not image.is_file():
        raise DatasetError(f"Image {image} not found.")
    return image


# ---------------------------------------------------------------- export


def export_dataset(src: str | Path, fmt: str, out_dir: str | Path) -> Path:
    """Write dataset ``src`` in format ``fmt`` into the new folder ``out_dir``; returns its main file."""
    _check_format(fmt)
    report = validate_dataset(src, check_images=False)
    if not report.ok:
        raise DatasetError(
            f"Cannot export {report.path}: {len(report.faults)} problem(s), the first on {report.faults[0]}; "
            "run 'python -m lab data check' to see them all."
        )
    records = load_records(src, absolute_images=True)
    for n, record in enumerate(records, start=1):
        record["id"] = str(record["id"]) if record.get("id") is not None else str(n)
    with _fresh_out_dir(out_dir) as out:
        if fmt == "openai":
            return write_records(out / "chat.jsonl", [_to_openai(r) for r in records])
        store = _ImageStore(out)
        for record in records:
            record["images"] = [store.add(_source_image(p), Path(p).name) for p in record["images"]]
        if fmt == "llamafactory":
            return _export_llamafactory(records, out, report.path.parent.name)
        if fmt == "imagefolder":
            return _export_imagefolder(records, out)
        return write_records(out / DATA_FILE, records)


def _export_llamafactory(records: list[dict], out: Path, name: str) -> Path:
    rows = []
    for record in records:
        turns = [{"from": LLAMAFACTORY_TAGS[_ROLE_TO_LF[m["role"]]], "value": m["content"]} for m in record["messages"]]
        row = {"id": record["id"], "conversations": turns, "images": record["images"]}
        if record.get("meta") is not None:
            row["meta"] = json.dumps(record["meta"], ensure_ascii=False)
        rows.append(row)
    data = out / "data.json"
    data.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    info = {
        re.sub(r"\W+", "_", name).strip("_") or "vlm_lab": {
            "file_name": data.name,
            "formatting": "sharegpt",
            "columns": {"messages": "conversations", "images": "images"},
            "tags": LLAMAFACTORY_TAGS,
        }
    }
    (out / "dataset_info.json").write_text(json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
    return data


def _export_imagefolder(records: list[dict], out: Path) -> Path:
    if not any(r["images"] for r in records):
        raise DatasetError("The imagefolder format needs images, and this dataset has none.")
    # imagefolder types every row alike: `file_name` holds exactly one image, so a single
    # record with another count switches the whole file to the `file_names` list column.
    single = all(len(r["images"]) == 1 for r in records)
    rows = []
    for record in records:
        row = {"file_name": record["images"][0]} if single else {"file_names": record["images"]}
        row["id"] = record["id"]
        row["messages"] = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
        row["meta"] = json.dumps(record.get("meta") or {}, ensure_ascii=False)
        rows.append(row)
    return write_records(out / "metadata.jsonl", rows)


def _image_data_url(path: str) -> str:
    image = _source_image(path)
    mime = mimetypes.guess_type(image.name)[0]
    if mime in _MIME_EXT:
        raw = image.read_bytes()
    else:
        # OpenAI takes PNG, JPEG, WebP and GIF only; anything else travels as PNG.
        from lab.images import open_image

        buffer = BytesIO()
        open_image(image).save(buffer, format="PNG")
        mime, raw = "image/png", buffer.getvalue()
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def _to_openai(record: dict) -> dict:
    urls = iter([_image_data_url(p) for p in record["images"]])
    messages = []
    for message in record["messages"]:
        content = message["content"]
        if IMAGE_TOKEN in content:
            pieces = content.split(IMAGE_TOKEN)
            parts = [{"type": "text", "text": pieces[0]}] if pieces[0] else []
            for piece in pieces[1:]:
                parts.append({"type": "image_url", "image_url": {"url": next(urls)}})
                if piece:
                    parts.append({"type": "text", "text": piece})
            content = parts
        messages.append({"role": message["role"], "content": content})
    return {"messages": messages}


# ---------------------------------------------------------------- import


def import_dataset(src: str | Path, fmt: str | None, out_dir: str | Path) -> Path:
    """Read ``src`` in format ``fmt`` (detected when ``None``) into the new dataset folder ``out_dir``.

    Returns ``out_dir``, which then holds ``data.jsonl`` and ``images/``.
    """
    src = Path(src).expanduser()
    if not src.exists():
        raise DatasetError(f"Nothing to import: {src} does not exist.")
    fmt = _check_format(fmt) if fmt else detect_format(src)
    readers = {"llamafactory": _read_llamafactory, "imagefolder": _read_imagefolder}
    try:
        records = readers.get(fmt, _read_messages_records)(src)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError) as err:
        # Foreign files break in many small ways; the exception still says where.
        raise DatasetError(f"{src} is not valid {fmt} data ({type(err).__name__}: {err}).") from None
    width = max(4, len(str(len(records))))
    with _fresh_out_dir(out_dir) as out:
        store = _ImageStore(out)
        for n, record in enumerate(records, start=1):
            record.setdefault("id", f"{n:0{width}d}")
            stored = []
            for k, image in enumerate(record["images"]):
                if isinstance(image, tuple):  # a decoded data URL: (bytes, extension)
                    name = f"{record['id']}_{k}" if len(record["images"]) > 1 else record["id"]
                    stored.append(store.add(image[0], name + image[1]))
                else:
                    stored.append(store.add(_source_image(image), Path(image).name))
            record["images"] = stored
        write_records(out / DATA_FILE, records)
    return out


def _source_file(src: Path) -> Path:
    """The records file of ``src``: the file itself, or a folder's data.jsonl or only JSON(L) file."""
    if src.is_file():
        return src
    if (src / DATA_FILE).is_file():
        return src / DATA_FILE
    candidates = [p for p in src.glob("*.json*") if p.suffix in (".json", ".jsonl")]
    if len(candidates) != 1:
        raise DatasetError(
            f"Cannot tell which file in {src} holds the records; name the file, or give a folder with "
            f"dataset_info.json, metadata.jsonl or {DATA_FILE}."
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
    raise DatasetError(f"Cannot tell the format of {src}; choose the format explicitly.")


def _read_rows(file: Path, limit: int | None = None) -> list[dict]:
    """Rows of a JSON list file or of a JSONL file."""
    try:
        text = file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise DatasetError(f"Cannot read {file} ({err}).") from None
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{file} is not valid JSON ({err.msg} on line {err.lineno}).") from None
        if not isinstance(rows, list):
            raise DatasetError(f"{file} is not a JSON list of records.")
        rows = rows[:limit] if limit else rows
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise DatasetError(f"Line {number} of {file} is not valid JSON ({err.msg}).") from None
                if limit and len(rows) >= limit:
                    break
    if not all(isinstance(row, dict) for row in rows):
        raise DatasetError(f"{file} has an entry that is not a JSON object.")
    return rows


def _keep_extras(row: dict, record: dict) -> dict:
    if row.get("id") is not None:
        record["id"] = str(row["id"])
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
            raise DatasetError(f"Record {number} of {file} has neither 'messages' nor 'query'.")
        records.append(_keep_extras(row, {"messages": messages, "images": images}))
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
        raise DatasetError(f"Record {number} of {file} has a message that is not an object.")
    content = message.get("content")
    if isinstance(content, list):
        text = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "image_url":
                images.append(_decode_image_url(part.get("image_url"), file, number))
                text.append(IMAGE_TOKEN)
            elif isinstance(part, dict):
                text.append(str(part.get("text", "")))
        content = "".join(text)
    return {**{k: v for k, v in message.items() if v is not None}, "content": content}


def _decode_image_url(image_url, file: Path, number: int) -> tuple[bytes, str] | str:
    url = image_url.get("url", "") if isinstance(image_url, dict) else str(image_url or "")
    found = _DATA_URL.fullmatch(url.strip())
    if found:
        ext = _MIME_EXT.get(found["mime"]) or mimetypes.guess_extension(found["mime"]) or ".img"
        return base64.b64decode(found["data"]), ext
    if url.startswith(("http://", "https://")):
        raise DatasetError(f"Record {number} of {file} links an image on the web ({url[:60]}); download it first.")
    return str(file.parent / url.removeprefix("file://"))


def _llamafactory_entry(src: Path) -> tuple[Path, dict, Path]:
    """(data file, dataset_info entry, folder the images are relative to) for a folder or a file."""
    folder = src if src.is_dir() else src.parent
    info_file = folder / "dataset_info.json"
    entries = json.loads(info_file.read_text(encoding="utf-8")) if info_file.is_file() else {}
    for entry in entries.values():
        data = folder / str(entry.get("file_name", ""))
        if data.is_file() and (src.is_dir() or data.resolve() == src.resolve()):
            return data, entry, folder
    if src.is_file():
        return src, {}, folder
    raise DatasetError(f"{info_file} names no data file that exists in {folder}.")


def _read_llamafactory(src: Path) -> list[dict]:
    data, entry, folder = _llamafactory_entry(src)
    if entry.get("formatting", "sharegpt") != "sharegpt":
        raise DatasetError(f"{data} is in LLaMA-Factory's {entry['formatting']} format; only sharegpt is supported.")
    tags = {**LLAMAFACTORY_TAGS, **entry.get("tags", {})}
    columns = {"messages": "conversations", "images": "images", **entry.get("columns", {})}
    to_role = {tags[tag]: role for role, tag in _ROLE_TO_LF.items()}
    records = []
    for number, row in enumerate(_read_rows(data), start=1):
        messages = []
        if columns.get("system") and row.get(columns["system"]):
            messages.append({"role": "system", "content": row[columns["system"]]})
        for turn in row.get(columns["messages"]) or []:
            role = to_role.get(turn[tags["role_tag"]])
            if role is None:
                raise DatasetError(f"Record {number} of {data} has a turn from unknown role {turn[tags['role_tag']]!r}.")
            messages.append({"role": role, "content": turn.get(tags["content_tag"], "")})
        images = row.get(columns["images"]) or []
        images = [str(folder / image_entry(i)) for i in ([images] if isinstance(images, str) else images)]
        records.append(_keep_extras(row, {"messages": messages, "images": images}))
    return records


def _read_imagefolder(src: Path) -> list[dict]:
    metadata = src / "metadata.jsonl" if src.is_dir() else src
    if not metadata.is_file():
        raise DatasetError(f"{src} has no metadata.jsonl.")
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
        records.append(_keep_extras(row, {"messages": messages, "images": images}))
    return records


def _messages_from_text_columns(row: dict, n_images: int, file: Path, number: int) -> list[dict]:
    """A caption-style row (``text``/``caption``/``answer``, optional ``prompt``/``question``)."""
    answer = next((row[k] for k in ("text", "caption", "answer", "response") if row.get(k)), None)
    if answer is None:
        raise DatasetError(f"Row {number} of {file} has no 'messages' and no text column (text, caption, answer).")
    prompt = next((row[k] for k in ("prompt", "question", "query") if row.get(k)), "")
    return [{"role": "user", "content": IMAGE_TOKEN * n_images + str(prompt)},
            {"role": "assistant", "content": str(answer)}]
