"""Checking a dataset before training does: every fault with its line and the reason.

:func:`validate_dataset` reads the file line by line rather than through
:func:`lab.dataset.iter_records`, so one broken line becomes a fault on that line
instead of stopping the check; the UI's Check button and ``python -m lab data check``
show the report.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lab.dataset import IMAGE_TOKEN, ROLES, dataset_file, image_entry, iter_lines
from lab.errors import BadImageError, DatasetError, Text, localize
from lab.images import open_image


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
