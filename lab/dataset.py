"""The dataset folder: reading, writing, checking, splitting and describing it.

A dataset is ``data/<name>/data.jsonl`` with one ms-swift record per line and image
paths relative to the folder::

    {"id": "0001", "images": ["images/0001.png"],
     "messages": [{"role": "system", "content": "..."},
                  {"role": "user", "content": "<image>Describe the component."},
                  {"role": "assistant", "content": "..."}],
     "meta": {"labeler": "gpt-4o", "prompt_sha": "...", "status": "ok"}}

A dataset path may name the folder (its ``data.jsonl`` is read) or any ``.jsonl`` file
in it (``data/sample/data_json_zh.jsonl``); images are relative to the file's folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from lab import paths
from lab.errors import BadImageError, ConfigError, DatasetError, Text, localize
from lab.images import open_image

DATA_FILE = "data.jsonl"
IMAGE_TOKEN = "<image>"
ROLES = ("system", "user", "assistant", "tool")

_append_lock = threading.Lock()


def dataset_file(path: str | Path) -> Path:
    """The JSONL file behind a dataset path (a folder means its ``data.jsonl``)."""
    path = paths.check_allowed(Path(path).expanduser())
    if path.is_dir():
        path = path / DATA_FILE
        if not path.is_file():
            raise DatasetError(f"{path.parent} is not a dataset folder: it has no {DATA_FILE}.",
                               zh=f"{path.parent} 不是数据集文件夹：其中没有 {DATA_FILE}。")
    elif not path.is_file():
        raise DatasetError(f"Dataset not found: {path}.", zh=f"找不到数据集：{path}。")
    return path


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
        raise DatasetError(f"{file} is not UTF-8 text.", zh=f"{file} 不是 UTF-8 编码的文本。") from None


def iter_records(path: str | Path) -> Iterator[tuple[int, dict]]:
    """``(line_number, record)`` for every record; a line that is not a JSON object is an error."""
    file = dataset_file(path)
    for number, line in iter_lines(file):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"Line {number} of {file} is not valid JSON ({err.msg}).",
                               zh=f"{file} 第 {number} 行不是有效的 JSON（{err.msg}）。") from None
        if not isinstance(record, dict):
            raise DatasetError(f"Line {number} of {file} is not a JSON object.",
                               zh=f"{file} 第 {number} 行不是 JSON 对象。")
        yield number, record


def load_records(path: str | Path, absolute_images: bool = False) -> list[dict]:
    """All records of a dataset; with ``absolute_images`` their image paths are made absolute."""
    root = dataset_root(path)
    records = [record for _, record in iter_records(path)]
    if absolute_images:
        records = [{**r, "images": [str(p) for p in image_paths(r, root)]} for r in records]
    return records


def image_entry(entry) -> str:
    """The path string of one ``images`` entry (a string, or ms-swift's ``{"path": ...}``)."""
    if isinstance(entry, dict) and isinstance(entry.get("path"), str):
        return entry["path"]
    if isinstance(entry, str):
        return entry
    raise DatasetError(f"Image entry {entry!r} is not a path.", zh=f"图片条目 {entry!r} 不是路径。")


def image_paths(record: dict, root: str | Path) -> list[Path]:
    """Absolute paths of a record's images, relative entries resolved against ``root``."""
    images = record.get("images") or []
    if isinstance(images, str):
        images = [images]
    return [(Path(root) / image_entry(entry)).resolve() for entry in images]


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


# ---------------------------------------------------------------- validation


@dataclass
class Fault:
    """One problem with one record: the line it is on, its id if it has one, and why.

    ``str(fault)`` is the English line and ``fault.zh`` the Chinese one, so
    :func:`lab.errors.localize` works on a fault as on a :class:`~lab.errors.Text`.
    """

    line: int
    record_id: str | None
    reason: Text

    def __str__(self) -> str:
        where = f"line {self.line}" + (f" (id {self.record_id})" if self.record_id is not None else "")
        return f"{where}: {self.reason}"

    @property
    def zh(self) -> str:
        """The same line in Chinese."""
        where = f"第 {self.line} 行" + (f"（id {self.record_id}）" if self.record_id is not None else "")
        return f"{where}：{localize(self.reason, 'zh')}"


@dataclass
class ValidationReport:
    """What :func:`validate_dataset` found: counts and every fault with its line."""

    path: Path
    total: int = 0
    valid: int = 0
    faults: list[Fault] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.faults

    def summary(self) -> Text:
        """One sentence for the UI and the CLI, in English with its Chinese form."""
        if self.total == 0:
            return Text(f"{self.path} has no records.", f"{self.path} 中没有样本。")
        if self.ok:
            return Text(f"All {self.total} records in {self.path} are valid.",
                        f"{self.path} 中的 {self.total} 条样本全部有效。")
        lines = sorted({f.line for f in self.faults})
        shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
        return Text(
            f"{self.valid} of {self.total} records in {self.path} are valid; "
            f"{len(self.faults)} problem(s) on line(s) {shown}.",
            f"{self.path} 中 {self.total} 条样本有 {self.valid} 条有效；"
            f"共 {len(self.faults)} 个问题，位于第 {shown} 行。",
        )


def validate_dataset(path: str | Path, check_images: bool = True) -> ValidationReport:
    """Check every record of a dataset; each fault names its line and the reason.

    With ``check_images`` every image is decoded (each file once), which catches
    truncated or non-image files before training does.
    """
    file = dataset_file(path)
    report = ValidationReport(path=file)
    root = file.parent.resolve()
    image_cache: dict[Path, str | None] = {}
    seen_ids: dict[str, int] = {}
    for number, line in iter_lines(file):
        report.total += 1
        reasons, record_id = _record_faults(line, root, check_images, image_cache)
        if record_id is not None:
            if record_id in seen_ids:
                first = seen_ids[record_id]
                reasons.append(Text(f"duplicate id {record_id!r} (first on line {first})",
                                    f"id {record_id!r} 重复（首次出现在第 {first} 行）"))
            seen_ids.setdefault(record_id, number)
        report.faults.extend(Fault(number, record_id, reason) for reason in reasons)
        report.valid += not reasons
    return report


def _record_faults(line: str, root: Path, check_images: bool, cache: dict) -> tuple[list[Text], str | None]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return [Text(f"not valid JSON ({err.msg} at column {err.colno})",
                     f"不是有效的 JSON（第 {err.colno} 列：{err.msg}）")], None
    if not isinstance(record, dict):
        return [Text("not a JSON object", "不是 JSON 对象")], None
    record_id = None if record.get("id") is None else str(record["id"])
    reasons = _message_faults(record.get("messages"))
    images = record.get("images") or []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list):
        return reasons + [Text("'images' is not a list of paths", "'images' 不是路径列表")], record_id
    if not reasons:
        placeholders = sum(m["content"].count(IMAGE_TOKEN) for m in record["messages"])
        if placeholders != len(images):
            reasons.append(Text(f"{placeholders} {IMAGE_TOKEN} placeholder(s) but {len(images)} image(s)",
                                f"有 {placeholders} 个 {IMAGE_TOKEN} 占位符，却有 {len(images)} 张图片"))
    reasons += [r for entry in images if (r := _image_fault(entry, root, check_images, cache))]
    return reasons, record_id


def _message_faults(messages) -> list[Text]:
    if not isinstance(messages, list) or not messages:
        if not messages:
            return [Text("no messages", "没有 messages")]
        return [Text("'messages' is not a list", "'messages' 不是列表")]
    reasons = []
    for i, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            reasons.append(Text(f"message {i} is not an object", f"第 {i} 条消息不是对象"))
        elif (role := message.get("role")) not in ROLES:
            allowed = ", ".join(ROLES)
            reasons.append(Text(f"message {i} has unknown role {role!r} (allowed: {allowed})",
                                f"第 {i} 条消息的角色 {role!r} 未知（可用：{allowed}）"))
        elif not isinstance(message.get("content"), str):
            reasons.append(Text(f"message {i} ({role}) has no text content", f"第 {i} 条消息（{role}）没有文本内容"))
        elif role == "assistant" and not message["content"].strip():
            reasons.append(Text(f"message {i} is an empty assistant answer", f"第 {i} 条消息是空的 assistant 回答"))
    if reasons:
        return reasons
    roles = [m["role"] for m in messages if m["role"] != "system"]
    if "user" not in roles:
        return [Text("no user message", "没有 user 消息")]
    if "assistant" not in roles:
        return [Text("no assistant answer", "没有 assistant 回答")]
    if roles[-1] != "assistant":
        return [Text("the conversation ends without an assistant answer", "对话的最后一条不是 assistant 回答")]
    return []


def _image_fault(entry, root: Path, check_images: bool, cache: dict) -> Text | None:
    try:
        name = image_entry(entry)
    except DatasetError:
        return Text(f"image entry {entry!r} is not a path", f"图片条目 {entry!r} 不是路径")
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        return Text(f"image {name} is outside the dataset folder", f"图片 {name} 不在数据集文件夹内")
    if not path.is_file():
        return Text(f"image {name} not found", f"找不到图片 {name}")
    if check_images and path not in cache:
        try:
            open_image(path)
            cache[path] = None
        except BadImageError as err:
            cache[path] = Text(err.reason, err.reason_zh)  # the fault names the image already
    reason = cache.get(path)
    if not reason:
        return None
    return Text(f"image {name} cannot be used: {reason}", f"图片 {name} 无法使用：{localize(reason, 'zh')}")


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
        raise ConfigError(f"The validation ratio must be at least 0 and below 1, not {val_ratio}.",
                          zh=f"验证集比例必须大于等于 0 且小于 1，当前为 {val_ratio}。")
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
    prefix = "" if file.name == DATA_FILE else f"{file.stem}_"
    train_path = write_records(file.parent / f"{prefix}train.jsonl", train)
    val_path = write_records(file.parent / f"{prefix}val.jsonl", val)
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
        languages[guess_language(text.replace(IMAGE_TOKEN, ""))] += 1
    return DatasetStats(len(records), images, turns, multi_turn, dict(languages))


def list_datasets(include_variants: bool = False) -> list[Path]:
    """Dataset folders under :func:`lab.paths.datasets_dir`, then the bundled sample.

    With ``include_variants`` the other ``.jsonl`` files in each folder (variants and
    splits such as ``val.jsonl``) follow their folder.
    """
    found: list[Path] = []
    base = paths.datasets_dir()
    folders = sorted(p for p in base.iterdir() if (p / DATA_FILE).is_file()) if base.is_dir() else []
    if (paths.SAMPLE_DATASET / DATA_FILE).is_file():
        folders.append(paths.SAMPLE_DATASET)
    for folder in folders:
        if folder.resolve() in {f.resolve() for f in found}:
            continue
        found.append(folder)
        if include_variants:
            found += sorted(p for p in folder.glob("*.jsonl") if p.name != DATA_FILE)
    return found


def latest_dataset() -> Path | None:
    """The dataset folder under :func:`lab.paths.datasets_dir` written most recently (labeled, imported)."""
    base = paths.datasets_dir()
    files = [p / DATA_FILE for p in base.iterdir() if (p / DATA_FILE).is_file()] if base.is_dir() else []
    return max(files, key=lambda f: f.stat().st_mtime).parent if files else None
