"""Writing a dataset of our own form in another tool's format.

Images are copied into ``out_dir/images/`` with relative paths (``openai`` embeds them
as base64 ``data:`` URLs instead); every record gets an id where the format has room.
"""

from __future__ import annotations

import base64
import glob
import json
import re
import secrets
import shutil
import time
from collections import Counter
from pathlib import Path

from lab import paths
from lab.conversation import IMAGE_PLACEHOLDER
from lab.dataset import DATA_FILE, load_records, write_records
from lab.dataset_check import validate_dataset
from lab.errors import DatasetError
from lab.formats.layout import (
    LLAMAFACTORY_TAGS,
    ROLE_TO_LF,
    ImageStore,
    VideoStore,
    check_format,
    fresh_out_dir,
    source_image,
)
from lab.formats.openai_rules import MAX_EXAMPLES_WITH_IMAGES, MAX_IMAGES_PER_EXAMPLE, openai_image
from lab.formats.summary import ExportSummary


def export_dataset(src: str | Path, fmt: str, out_dir: str | Path) -> Path:
    """Write dataset ``src`` in format ``fmt`` into the new folder ``out_dir``; returns its main file."""
    return export_with_summary(src, fmt, out_dir).main_file


def export_with_summary(src: str | Path, fmt: str, out_dir: str | Path) -> ExportSummary:
    """:func:`export_dataset`, returning what it wrote and converted (its ``summary()`` is for people)."""
    check_format(fmt)
    report = validate_dataset(src, check_images=False)
    if not report.ok:
        first = report.faults[0]
        raise DatasetError(
            "Cannot export {report_path}: {n_faults} problem(s), the first on {first}; "
            "run 'python -m lab data check' to see them all.",
            report_path=report.path,
            n_faults=len(report.faults),
            first=first,
        )
    records = load_records(src, absolute_images=True)
    if not records:
        raise DatasetError("{path} has no records; there is nothing to export.", path=report.path)
    for n, record in enumerate(records, start=1):
        record["id"] = str(record["id"]) if record.get("id") is not None else str(n)
    if fmt in ("openai", "imagefolder") and any(r.get("videos") for r in records):
        raise DatasetError(
            "The {fmt} format has no room for videos, and this dataset has some; export it as swift or llamafactory.",
            fmt=fmt,
        )
    if fmt == "openai":
        _check_openai_limits(records)
    with fresh_out_dir(out_dir) as out:
        converted = Counter()
        main_file = _write(records, fmt, out, report.path.parent.name, converted)
    return ExportSummary(main_file, fmt, len(records), converted)


def _write(records: list[dict], fmt: str, out: Path, name: str, converted: Counter) -> Path:
    if fmt == "openai":
        return write_records(out / "chat.jsonl", [_to_openai(r, converted) for r in records])
    store, videos = ImageStore(out), VideoStore(out)
    for record in records:
        record["images"] = [store.add(source_image(p), Path(p).name) for p in record["images"]]
        if record.get("videos"):
            record["videos"] = [videos.add(p) for p in record["videos"]]
    if fmt == "llamafactory":
        return _export_llamafactory(records, out, name)
    if fmt == "imagefolder":
        return _export_imagefolder(records, out)
    return write_records(out / DATA_FILE, records)


# An export for download is kept this long, so a visitor can fetch it; older ones are removed.
DOWNLOAD_KEEP_S = 3600


def export_for_download(src: str | Path, fmt: str) -> tuple[ExportSummary, Path]:
    """Export ``src`` into a new ``<workspace>/exports/<name>-<fmt>-<stamp>/`` and zip that folder
    next to it; returns (what was written, zip). Each request gets its own folder, so two visitors
    exporting the same dataset at once never write into (or delete) each other's files."""
    src = Path(src)
    check_format(fmt)  # before it becomes part of a folder name
    root = paths.check_allowed(paths.workspace() / "exports", write=True)
    prefix = f"{src.stem if src.is_file() else src.name}-{fmt}-"
    _remove_old_downloads(root, prefix)
    out_dir = root / f"{prefix}{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    exported = export_with_summary(src, fmt, out_dir)
    exported.download = True
    return exported, Path(shutil.make_archive(str(out_dir), "zip", root_dir=out_dir))


def _remove_old_downloads(root: Path, prefix: str) -> None:
    if not root.is_dir():
        return
    cutoff = time.time() - DOWNLOAD_KEEP_S
    for old in root.glob(f"{glob.escape(prefix)}*"):
        try:
            if old.stat().st_mtime < cutoff:
                shutil.rmtree(old) if old.is_dir() else old.unlink()
        except OSError:
            continue  # another request removed it first


def _export_llamafactory(records: list[dict], out: Path, name: str) -> Path:
    rows = []
    for record in records:
        messages = _grid_boxes(record, out, tokens=True)
        turns = [{"from": LLAMAFACTORY_TAGS[ROLE_TO_LF[m["role"]]], "value": m["content"]} for m in messages]
        row = {"id": record["id"], "conversations": turns, "images": record["images"]}
        if record.get("videos"):
            row["videos"] = record["videos"]
        if record.get("meta") is not None:
            row["meta"] = json.dumps(record["meta"], ensure_ascii=False)
        if record.get("objects") is not None:  # the exact boxes, for an import back
            row["objects"] = json.dumps(record["objects"], ensure_ascii=False)
        rows.append(row)
    data = out / "data.json"
    data.write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    info = {
        re.sub(r"\W+", "_", name).strip("_") or "vlm_lab": {
            "file_name": data.name,
            "formatting": "sharegpt",
            "columns": {
                "messages": "conversations",
                "images": "images",
                **({"videos": "videos"} if any("videos" in r for r in rows) else {}),
            },
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
        if record.get("objects") is not None:
            row["objects"] = json.dumps(record["objects"], ensure_ascii=False)
        rows.append(row)
    return write_records(out / "metadata.jsonl", rows)


def _grid_boxes(record: dict, root: Path, tokens: bool) -> list[dict]:
    """A record's messages with its boxes written on the 0-1000 grid: Qwen's tokens (as Qwen2-VL and
    Qwen3-VL read them, for LLaMA-Factory) or plain JSON (for OpenAI)."""
    if not record.get("objects"):
        return record["messages"]
    from lab.grounding import PLAIN, ImageSpace, box_format, read_objects, render_objects
    from lab.images import image_size

    sizes = [image_size(Path(root) / p) for p in record["images"]]
    spaces = [ImageSpace(width, height, width, height) for height, width in sizes]
    fmt = box_format("qwen2_vl") if tokens else PLAIN
    return render_objects(record["messages"], read_objects(record, sizes), fmt, spaces)


def _image_data_url(path: str, converted: Counter) -> str:
    mime, raw, kinds = openai_image(source_image(path))
    converted.update(kinds)
    return f"data:{mime};base64,{base64.b64encode(raw).decode('ascii')}"


def _check_openai_limits(records: list[dict]) -> None:
    """OpenAI's limits that an export cannot meet by converting images (see :mod:`lab.formats.openai_rules`)."""
    for record in records:
        if len(record["images"]) > MAX_IMAGES_PER_EXAMPLE:
            raise DatasetError(
                "Record {id} has {n} images; OpenAI fine-tuning takes at most {limit} per example.",
                id=record["id"],
                n=len(record["images"]),
                limit=MAX_IMAGES_PER_EXAMPLE,
            )
        if any(IMAGE_PLACEHOLDER in m["content"] for m in record["messages"] if m["role"] == "assistant"):
            raise DatasetError(
                "Record {id} has an image in an assistant message, which OpenAI fine-tuning refuses.", id=record["id"]
            )
    with_images = sum(1 for record in records if record["images"])
    if with_images > MAX_EXAMPLES_WITH_IMAGES:
        raise DatasetError(
            "{n} records have images; an OpenAI fine-tuning file takes at most {limit}.",
            n=with_images,
            limit=MAX_EXAMPLES_WITH_IMAGES,
        )


def _to_openai(record: dict, converted: Counter) -> dict:
    urls = iter([_image_data_url(p, converted) for p in record["images"]])
    messages = []
    for message in _grid_boxes(record, Path("/"), tokens=False):
        content = message["content"]
        if IMAGE_PLACEHOLDER in content:
            pieces = content.split(IMAGE_PLACEHOLDER)
            parts = [{"type": "text", "text": pieces[0]}] if pieces[0] else []
            for piece in pieces[1:]:
                parts.append({"type": "image_url", "image_url": {"url": next(urls)}})
                if piece:
                    parts.append({"type": "text", "text": piece})
            content = parts
        messages.append({"role": message["role"], "content": content})
    return {"messages": messages}
