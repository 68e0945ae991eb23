"""Checking a dataset before training does: every fault with its line and the reason.

:func:`validate_dataset` reads the file line by line rather than through
:func:`lab.dataset.iter_records`, so one broken line becomes a fault on that line
instead of stopping the check; the UI's Check button and ``python -m lab data check``
show the report. Boxes (``objects``) are checked against their placeholders and images
(:func:`lab.grounding.object_faults`); videos must be readable, and with a ``family`` that
takes no video, a record with one is a fault.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from lab.conversation import IMAGE_PLACEHOLDER
from lab.dataset import ROLES, dataset_file, image_entry, iter_lines
from lab.errors import BadImageError, DatasetError
from lab.images import open_image
from lab.text import Msg


@dataclass
class Fault:
    """One problem with one record: the line it is on, its id if it has one, and why.

    ``fault.msg`` is the report's line, so :func:`lab.errors.localize` works on a fault as on
    an error; ``str(fault)`` is its English.
    """

    line: int
    record_id: str | None
    reason: Msg

    @property
    def msg(self) -> Msg:
        if self.record_id is None:
            return Msg("line {line}: {reason}", line=self.line, reason=self.reason)
        return Msg(
            "line {line} (id {record_id}): {reason}", line=self.line, record_id=self.record_id, reason=self.reason
        )

    def __str__(self) -> str:
        return str(self.msg)


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

    def summary(self) -> Msg:
        """One sentence for the UI and the CLI, in English with its Chinese form."""
        if self.total == 0:
            return Msg("{path} has no records.", path=self.path)
        if self.ok:
            return Msg("All {total} records in {path} are valid.", total=self.total, path=self.path)
        lines = sorted({f.line for f in self.faults})
        shown = ", ".join(map(str, lines[:10])) + (", ..." if len(lines) > 10 else "")
        return Msg(
            "{valid} of {total} records in {path} are valid; {n_faults} problem(s) on line(s) {shown}.",
            valid=self.valid,
            total=self.total,
            path=self.path,
            n_faults=len(self.faults),
            shown=shown,
        )


def validate_dataset(path: str | Path, check_images: bool = True, family: str | None = None) -> ValidationReport:
    """Check every record of a dataset; each fault names its line and the reason.

    With ``check_images`` every image is decoded (each file once), which catches
    truncated or non-image files before training does; every video is opened too.
    ``family`` (a ``model_type``) refuses videos when that family takes none.
    """
    file = dataset_file(path)
    report = ValidationReport(path=file)
    root = file.parent.resolve()
    image_cache: dict[Path, str | None] = {}
    seen_ids: dict[str, int] = {}
    for number, line in iter_lines(file):
        report.total += 1
        reasons, record_id = _record_faults(line, root, check_images, image_cache, family)
        if record_id is not None:
            if record_id in seen_ids:
                first = seen_ids[record_id]
                reasons.append(
                    Msg("duplicate id {record_id!r} (first on line {first})", record_id=record_id, first=first)
                )
            seen_ids.setdefault(record_id, number)
        report.faults.extend(Fault(number, record_id, reason) for reason in reasons)
        report.valid += not reasons
    return report


def _record_faults(
    line: str, root: Path, check_images: bool, cache: dict, family: str | None = None
) -> tuple[list[Msg], str | None]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as err:
        return [Msg("not valid JSON ({err_msg} at column {colno})", err_msg=err.msg, colno=err.colno)], None
    if not isinstance(record, dict):
        return [Msg("not a JSON object")], None
    record_id = None if record.get("id") is None else str(record["id"])
    reasons = _message_faults(record.get("messages"))
    images = record.get("images") or []
    if isinstance(images, str):
        images = [images]
    if not isinstance(images, list):
        return reasons + [Msg("'images' is not a list of paths")], record_id
    if not reasons:
        placeholders = sum(m["content"].count(IMAGE_PLACEHOLDER) for m in record["messages"])
        if placeholders != len(images):
            reasons.append(
                Msg(
                    "{placeholders} {image_token} placeholder(s) but {n_images} image(s)",
                    placeholders=placeholders,
                    image_token=IMAGE_PLACEHOLDER,
                    n_images=len(images),
                )
            )
    reasons += [r for entry in images if (r := _image_fault(entry, root, check_images, cache))]
    if not reasons:
        from lab.grounding import object_faults

        reasons += object_faults(record, [_size(root / image_entry(entry)) for entry in images])
    return reasons + _video_faults(record, root, check_images, family), record_id


def _size(path: Path) -> tuple[int, int] | None:
    from lab.images import image_size

    try:
        return image_size(path)
    except BadImageError:
        return None


def _video_faults(record: dict, root: Path, check_videos: bool, family: str | None) -> list[Msg]:
    from lab.video import VIDEO_FAMILIES, VIDEO_PLACEHOLDER, video_fault

    videos = record.get("videos") or []
    videos = [videos] if isinstance(videos, str) else videos
    messages = record.get("messages") if isinstance(record.get("messages"), list) else []
    placeholders = sum(
        m["content"].count(VIDEO_PLACEHOLDER)
        for m in messages
        if isinstance(m, dict) and isinstance(m.get("content"), str)
    )
    if not isinstance(videos, list):
        return [Msg("'videos' is not a list of paths")]
    reasons = []
    if placeholders != len(videos):
        reasons.append(
            Msg(
                "{placeholders} {video_token} placeholder(s) but {n_videos} video(s)",
                placeholders=placeholders,
                video_token=VIDEO_PLACEHOLDER,
                n_videos=len(videos),
            )
        )
    if videos and family is not None and family not in VIDEO_FAMILIES:
        reasons.append(Msg("it has a video, which {family} models cannot take", family=family))
    for entry in videos:
        try:
            name = image_entry(entry)
        except DatasetError:
            reasons.append(Msg("video entry {entry!r} is not a path", entry=entry))
            continue
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            reasons.append(Msg("video {name} is outside the dataset folder", name=name))
        elif not path.exists():
            reasons.append(Msg("video {name} not found", name=name))
        elif check_videos and (reason := video_fault(path)) is not None:
            reasons.append(Msg("video {name} cannot be used: {reason}", name=name, reason=reason))
    return reasons


def _message_faults(messages) -> list[Msg]:
    if not isinstance(messages, list) or not messages:
        if not messages:
            return [Msg("no messages")]
        return [Msg("'messages' is not a list")]
    reasons = []
    for i, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            reasons.append(Msg("message {i} is not an object", i=i))
        elif (role := message.get("role")) not in ROLES:
            allowed = ", ".join(ROLES)
            reasons.append(
                Msg("message {i} has unknown role {role!r} (allowed: {allowed})", i=i, role=role, allowed=allowed)
            )
        elif not isinstance(message.get("content"), str):
            reasons.append(Msg("message {i} ({role}) has no text content", i=i, role=role))
        elif role == "assistant" and not message["content"].strip():
            reasons.append(Msg("message {i} is an empty assistant answer", i=i))
    if reasons:
        return reasons
    roles = [m["role"] for m in messages if m["role"] != "system"]
    if "user" not in roles:
        return [Msg("no user message")]
    if "assistant" not in roles:
        return [Msg("no assistant answer")]
    if roles[-1] != "assistant":
        return [Msg("the conversation ends without an assistant answer")]
    return []


def _image_fault(entry, root: Path, check_images: bool, cache: dict) -> Msg | None:
    try:
        name = image_entry(entry)
    except DatasetError:
        return Msg("image entry {entry!r} is not a path", entry=entry)
    path = (root / name).resolve()
    if not path.is_relative_to(root):
        return Msg("image {name} is outside the dataset folder", name=name)
    if not path.is_file():
        return Msg("image {name} not found", name=name)
    if check_images and path not in cache:
        try:
            open_image(path)
            cache[path] = None
        except BadImageError as err:
            cache[path] = err.reason  # the fault names the image already
    reason = cache.get(path)
    if not reason:
        return None
    return Msg("image {name} cannot be used: {reason}", name=name, reason=reason)
