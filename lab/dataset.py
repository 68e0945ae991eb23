"""The dataset folder: reading, writing, splitting and describing it.

A dataset is ``data/<name>/data.jsonl`` with one ms-swift record per line and image
paths relative to the folder::

    {"id": "0001", "images": ["images/0001.png"],
     "messages": [{"role": "system", "content": "..."},
                  {"role": "user", "content": "<image>Describe the component."},
                  {"role": "assistant", "content": "..."}],
     "meta": {"labeler": "gpt-4o", "prompt_sha": "...", "status": "ok"}}

A dataset path may name the folder (its ``data.jsonl`` is read) or any ``.jsonl`` file
in it (``data/sample/data_json_zh.jsonl``); images are relative to the file's folder.
Checking a dataset record by record is :mod:`lab.dataset_check`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lab import paths
from lab.conversation import IMAGE_PLACEHOLDER
from lab.errors import ConfigError, DatasetError

DATA_FILE = "data.jsonl"
# A labeled folder's bookkeeping (lab.labeling.store): images that failed and records a person
# rejected. They sit next to data.jsonl but are not training data, so no list offers them.
NOT_DATASETS = ("failures.jsonl", "rejected.jsonl")
ROLES = ("system", "user", "assistant", "tool")

_append_lock = threading.Lock()


def dataset_file(path: str | Path) -> Path:
    """The JSONL file behind a dataset path (a folder means its ``data.jsonl``)."""
    path = paths.check_allowed(Path(path).expanduser())
    if path.is_dir():
        path = path / DATA_FILE
        if not path.is_file():
            raise DatasetError(
                "{path_parent} is not a dataset folder: it has no {data_file}.",
                path_parent=path.parent,
                data_file=DATA_FILE,
            )
    elif not path.is_file():
        raise DatasetError("Dataset not found: {path}.", path=path)
    return paths.check_allowed(path)  # the data.jsonl of an allowed folder may itself be a link out


def named_dataset(text: str) -> Path:
    """Where a dataset a person names goes: a plain name means ``data/<name>`` in the workspace, anything
    else is a path (the Labeling tab's "Dataset to write", ``python -m lab review NAME``)."""
    text = (text or "").strip()
    if not text:
        raise ConfigError("Give the dataset a name, e.g. my_labels.")
    if "/" not in text and "\\" not in text and not text.startswith((".", "~")):
        return paths.under(paths.datasets_dir(), text)
    return paths.resolve(text)


def dataset_root(path: str | Path) -> Path:
    """The folder that a dataset's relative image paths start from."""
    return dataset_file(path).parent


def iter_lines(path: str | Path) -> Iterator[tuple[int, str]]:
    """``(line_number, text)`` for every non-blank line, numbered from 1."""
    file = dataset_file(path)
    try:
        with open(file, encoding="utf-8-sig") as f:
            for number, line in enumerate(f, start=1):
                if line.strip():
                    yield number, line
    except UnicodeDecodeError:
        raise DatasetError("{file} is not UTF-8 text.", file=file) from None


def iter_records(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line_number, record)`` for every record; a line that is not a JSON object is an error."""
    file = dataset_file(path)
    for number, line in iter_lines(file):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(
                "Line {number} of {file} is not valid JSON ({err_msg}).", number=number, file=file, err_msg=err.msg
            ) from None
        if not isinstance(record, dict):
            raise DatasetError("Line {number} of {file} is not a JSON object.", number=number, file=file)
        yield number, record


def load_records(path: str | Path, absolute_images: bool = False) -> list[dict]:
    """All records of a dataset; with ``absolute_images`` their image (and video) paths are made absolute."""
    root = dataset_root(path)
    records = [record for _, record in iter_records(path)]
    if absolute_images:
        records = [absolute_media(r, root) for r in records]
    return records


def absolute_media(record: dict, root: str | Path) -> dict:
    """``record`` with its image paths, and its video paths if it has any, made absolute against ``root``."""
    record = {**record, "images": [str(p) for p in image_paths(record, root)]}
    if record.get("videos"):
        record["videos"] = [str(p) for p in video_paths(record, root)]
    return record


def image_entry(entry) -> str:
    """The path string of one ``images`` entry (a string, or ms-swift's ``{"path": ...}``)."""
    if isinstance(entry, dict) and isinstance(entry.get("path"), str):
        return entry["path"]
    if isinstance(entry, str):
        return entry
    raise DatasetError("Image entry {entry!r} is not a path.", entry=entry)


def image_paths(record: dict, root: str | Path) -> list[Path]:
    """Absolute paths of a record's images, relative entries resolved against ``root``.

    On a shared deployment an image outside the workspace is refused (:func:`lab.paths.check_allowed`),
    so no record can make the lab show, copy or train on a file of the server.
    """
    images = record.get("images") or []
    if isinstance(images, str):
        images = [images]
    return [paths.check_allowed(Path(root) / image_entry(entry)).resolve() for entry in images]


def video_paths(record: dict, root: str | Path) -> list[Path]:
    """Absolute paths of a record's videos (files or folders of frames), under the same guard as images."""
    videos = record.get("videos") or []
    if isinstance(videos, str):
        videos = [videos]
    return [paths.check_allowed(Path(root) / image_entry(entry)).resolve() for entry in videos]


def _dumps(record: dict) -> str:
    return json.dumps(record, ensure_ascii=False)


def write_records(path: str | Path, records: Iterable[dict]) -> Path:
    """Write ``records`` as JSONL at ``path``, atomically: readers see the old or the new file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for record in records:
                f.write(_dumps(record) + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def append_record(path: str | Path, record: dict) -> None:
    """Append one record and flush it to disk, so a crash loses at most the line being written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _append_lock, open(path, "a+b") as f:
        # A previous crash may have left a half line; start on a fresh one instead of gluing to it.
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
        f.write((_dumps(record) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- split


def _record_key(record: dict) -> str:
    if record.get("id") is not None:
        return str(record["id"])
    content = {"messages": record.get("messages"), "images": record.get("images")}
    return json.dumps(content, ensure_ascii=False, sort_keys=True)


def _side_score(record: dict, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}\0{_record_key(record)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_dataset(path: str | Path, val_ratio: float, seed: int = 42) -> tuple[list[dict], list[dict]]:
    """Split a dataset into ``(train, val)`` records, keeping the file order within each.

    A record's side depends only on its id (or its content, when it has none) and
    ``seed``, so the same seed gives the same split and appending records never moves
    the others. The validation share is therefore close to, not exactly, ``val_ratio``;
    with ``val_ratio > 0`` and at least 2 records both sides get at least one record.
    """
    if not 0 <= val_ratio < 1:
        raise ConfigError("The validation ratio must be at least 0 and below 1, not {val_ratio}.", val_ratio=val_ratio)
    records = load_records(path)
    if val_ratio == 0 or len(records) < 2:
        return records, []
    scores = [_side_score(r, seed) for r in records]
    in_val = [s < val_ratio for s in scores]
    if not any(in_val):
        in_val[scores.index(min(scores))] = True
    if all(in_val):
        in_val[scores.index(max(scores))] = False
    train = [r for r, v in zip(records, in_val) if not v]
    val = [r for r, v in zip(records, in_val) if v]
    return train, val


def write_split(path: str | Path, val_ratio: float, seed: int = 42) -> tuple[Path, Path]:
    """Write ``train.jsonl`` and ``val.jsonl`` next to the dataset file and return their paths.

    For a variant file such as ``data_json_zh.jsonl`` the names carry its stem
    (``data_json_zh_train.jsonl``) so that splits of different variants do not collide.
    """
    file = dataset_file(path)
    train, val = split_dataset(file, val_ratio, seed)
    if not train and not val:
        raise DatasetError("{path} has no records; there is nothing to split.", path=file)
    prefix = "" if file.name == DATA_FILE else f"{file.stem}_"
    train_path = write_records(paths.check_allowed(file.parent / f"{prefix}train.jsonl", write=True), train)
    val_path = write_records(paths.check_allowed(file.parent / f"{prefix}val.jsonl", write=True), val)
    return train_path, val_path


# ---------------------------------------------------------------- stats and listing

_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef]")
_LATIN = re.compile(r"[A-Za-z]")


def guess_language(text: str) -> str:
    """``"zh"`` when CJK characters make up a fair share of the letters, else ``"en"``.

    A Chinese answer usually still carries some Latin (JSON keys, product names), and one
    Chinese character carries about as much as a whole English word, hence the low bar.
    """
    cjk = len(_CJK.findall(text))
    latin = len(_LATIN.findall(text))
    return "zh" if cjk and cjk / (cjk + latin) >= 0.2 else "en"


@dataclass
class DatasetStats:
    """A dataset at a glance."""

    records: int
    images: int  # image references, counting a reused image each time
    turns: int  # assistant answers
    multi_turn: int  # records with more than one answer
    languages: dict[str, int]  # {"zh": n, "en": m}, guessed per record from its text


def dataset_stats(path: str | Path) -> DatasetStats:
    """Count records, images, answers and languages of a dataset."""
    records = load_records(path)
    languages: Counter = Counter()
    images = turns = multi_turn = 0
    for record in records:
        messages = [m for m in record.get("messages") or [] if isinstance(m, dict)]
        text = " ".join(str(m.get("content", "")) for m in messages if m.get("role") != "system")
        answers = sum(m.get("role") == "assistant" for m in messages)
        images += len(record.get("images") or [])
        turns += answers
        multi_turn += answers > 1
        languages[guess_language(text.replace(IMAGE_PLACEHOLDER, ""))] += 1
    return DatasetStats(len(records), images, turns, multi_turn, dict(languages))


def list_datasets(include_variants: bool = False) -> list[Path]:
    """Dataset folders under :func:`lab.paths.datasets_dir`, then the bundled sample.

    With ``include_variants`` the other ``.jsonl`` files in each folder (variants and
    splits such as ``val.jsonl``) follow their folder.
    """
    found: list[Path] = []
    base = paths.datasets_dir()
    folders = sorted(_dataset_folders(base))
    if (paths.SAMPLE_DATASET / DATA_FILE).is_file():
        folders.append(paths.SAMPLE_DATASET)
    for folder in folders:
        if folder.resolve() in {f.resolve() for f in found}:
            continue
        found.append(folder)
        if include_variants:
            found += sorted(
                p
                for p in folder.glob("*.jsonl")
                if p.name != DATA_FILE and p.name not in NOT_DATASETS and paths.is_allowed(p)
            )
    return found


def _dataset_folders(base: Path) -> list[Path]:
    """The dataset folders directly in ``base``; on a shared deployment not those that link out of it."""
    if not base.is_dir():
        return []
    return [p for p in base.iterdir() if paths.is_allowed(p) and (p / DATA_FILE).is_file()]


def latest_dataset(with_records: bool = True) -> Path | None:
    """The dataset folder under :func:`lab.paths.datasets_dir` written most recently (labeled, imported);
    with ``with_records``, the newest that has a record (a labeling run whose answers all failed leaves
    an empty one)."""
    files = [folder / DATA_FILE for folder in _dataset_folders(paths.datasets_dir())]
    if with_records:
        files = [f for f in files if has_records(f)]
    return max(files, key=lambda f: f.stat().st_mtime).parent if files else None


def has_records(path: str | Path) -> bool:
    """Whether a dataset file (or folder) has a line that is not blank."""
    try:
        with open(dataset_file(path), "rb") as file:
            return any(line.strip() for line in file)
    except (DatasetError, OSError):
        return False
