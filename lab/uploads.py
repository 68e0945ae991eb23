"""Files that people upload: held to size limits, zips unpacked without trusting them.

Every place that takes an uploaded file goes through here: the Labeling tab's images and
zips, the Dataset tab's import, the images of the prompt preview and of chat. On a shared
deployment strangers upload, so a zip is checked before anything is written (member names
and types, declared sizes, compression ratios) and its bytes are counted again as they are
written, since a zip can lie about its sizes. A member that is absolute, contains ``..``,
has a name that does not decode, or is a symbolic link (or any other special file) refuses
the whole zip, and every target is resolved, must stay inside its folder and must pass
:func:`lab.paths.check_allowed`. An upload is unpacked into a hidden staging folder that is
renamed into place only when all of it passed, and removed on any failure: a refused upload
leaves nothing behind, and the person reads one sentence saying which limit it broke.

The limits, read from the environment at each upload (a Space sets them as variables):

``LAB_UPLOAD_MAX_MB`` (default 500)
    the most one uploaded file may weigh, in MB (the app also hands it to Gradio, which
    stops a bigger file while it arrives);
``LAB_UPLOAD_MAX_UNPACKED_MB`` (default 2000)
    the most one upload may take once unpacked, all its files and zips together, in MB;
``LAB_UPLOAD_MAX_FILES`` (default 10000)
    the most files and folders one upload may create;
``LAB_UPLOAD_MAX_RATIO`` (default 100)
    how many times its compressed size a zip member, or a whole zip, may unpack to; sizes
    under 1 MB are not held to it (a small text file can honestly shrink 200 times).

A MB here is 2**20 bytes.
"""

from __future__ import annotations

import math
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path

from lab import paths
from lab.errors import ConfigError, LabError

MB = 1024 * 1024
RATIO_FLOOR = MB  # below this many bytes a high compression ratio is harmless
CHUNK = 256 * 1024
SKIPPED_FOLDERS = ("__MACOSX",)  # resource forks macOS adds to zips, not the person's files


@dataclass(frozen=True)
class UploadLimits:
    """What one upload may be; :meth:`from_env` reads the variables named in the module docstring."""

    max_file_mb: float = 500
    max_unpacked_mb: float = 2000
    max_files: int = 10000
    max_ratio: float = 100

    @classmethod
    def from_env(cls) -> UploadLimits:
        values = {}
        for field in fields(cls):
            name = ENV_VARS[field.name]
            raw = os.environ.get(name, "").strip()
            if raw:
                values[field.name] = _positive(name, raw, int if field.type == "int" else float)
        return cls(**values)

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * MB)

    @property
    def max_unpacked_bytes(self) -> int:
        return int(self.max_unpacked_mb * MB)


ENV_VARS = {
    "max_file_mb": "LAB_UPLOAD_MAX_MB",
    "max_unpacked_mb": "LAB_UPLOAD_MAX_UNPACKED_MB",
    "max_files": "LAB_UPLOAD_MAX_FILES",
    "max_ratio": "LAB_UPLOAD_MAX_RATIO",
}


def _positive(name: str, raw: str, kind: type) -> float:
    try:
        value = kind(raw)
    except ValueError:
        value = 0
    if not 0 < value < math.inf:  # also refuses nan, which no size would ever exceed
        raise ConfigError("{name} must be a positive number, not {raw!r}.", name=name, raw=raw)
    return value


def check_file(path: str | Path, limits: UploadLimits | None = None) -> Path:
    """``path``, a file just uploaded, if it is no bigger than one upload may be."""
    limits = limits or UploadLimits.from_env()
    path = Path(path)
    if not path.is_file():
        raise LabError("The uploaded file {path_name} is gone; upload it again.", path_name=path.name)
    size = path.stat().st_size
    if size > limits.max_file_bytes:
        mb, limit = f"{size / MB:.1f}", f"{limits.max_file_mb:g}"
        raise LabError(
            "{path_name} is {mb} MB; this server takes at most {limit} MB per uploaded file.",
            path_name=path.name,
            mb=mb,
            limit=limit,
        )
    return path


@dataclass
class Received:
    """An upload put into the workspace: its new folder and, per kept file, what it became there."""

    folder: Path
    entries: list[Path]


def receive(files: Iterable[str | Path], suffixes: Iterable[str], limits: UploadLimits | None = None) -> Received:
    """Put uploaded ``files`` into a new folder under ``<workspace>/uploads/``, all or nothing.

    A zip is unpacked into a folder named after it; another file is copied when its suffix is
    one of ``suffixes`` and left out otherwise. Any limit broken raises a :class:`LabError`
    and keeps nothing.
    """
    limits = limits or UploadLimits.from_env()
    sources = [check_file(f if isinstance(f, (str, os.PathLike)) else f.name, limits) for f in files]
    suffixes = {s.lower() for s in suffixes}
    root = paths.check_allowed(paths.workspace() / "uploads")
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=root))
    try:
        tally = _Tally(limits)
        entries = [_take(source, staging, suffixes, tally) for source in sources]
        folder = root / f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return Received(folder, [folder / entry.relative_to(staging) for entry in entries if entry is not None])


def unpack(archive: str | Path, target: str | Path, limits: UploadLimits | None = None) -> Path:
    """Unpack the zip ``archive`` into the new folder ``target``, all or nothing; returns ``target``."""
    archive, target = Path(archive), paths.check_allowed(Path(target))
    if target.exists():
        raise LabError("{target} already exists; unpack into a new folder.", target=target)
    limits = limits or UploadLimits.from_env()
    check_file(archive, limits)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _extract(archive, staging, _Tally(limits))
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


class _Tally:
    """What one upload has created so far, held to its limits."""

    def __init__(self, limits: UploadLimits):
        self.limits = limits
        self.files = 0
        self.bytes = 0

    def add_files(self, upload: str, n: int = 1) -> None:
        self.files += n
        if self.files > self.limits.max_files:
            limit = self.limits.max_files
            raise LabError(
                "{upload} holds more than {limit} files, the most one upload may create here; nothing was kept.",
                upload=upload,
                limit=limit,
            )

    def add_bytes(self, upload: str, n: int) -> None:
        self.check_room(upload, n)
        self.bytes += n

    def check_room(self, upload: str, n: int) -> None:
        """Refuse the upload if ``n`` more bytes would take it over the unpacked size limit."""
        if self.bytes + n > self.limits.max_unpacked_bytes:
            limit = f"{self.limits.max_unpacked_mb:g}"
            raise LabError(
                "{upload} unpacks to more than {limit} MB, the most one upload may take here; nothing was kept.",
                upload=upload,
                limit=limit,
            )

    def check_ratio(self, upload: str, member: str | None, unpacked: int, packed: int) -> None:
        """Refuse a member (or, for ``None``, the whole zip) that expands more than the ratio allows."""
        if unpacked <= RATIO_FLOOR or unpacked <= self.limits.max_ratio * max(packed, 1):
            return
        limit = f"{self.limits.max_ratio:g}"
        if member is None:
            raise LabError(
                "{upload} unpacks to more than {limit} times its own size, as zip bombs do; nothing was kept.",
                upload=upload,
                limit=limit,
            )
        raise LabError(
            "{upload}: {member!r} unpacks to more than {limit} times its compressed size, "
            "as zip bombs do; nothing was kept.",
            upload=upload,
            member=member,
            limit=limit,
        )


def _take(source: Path, staging: Path, suffixes: set[str], tally: _Tally) -> Path | None:
    """One uploaded file into ``staging``: a zip unpacked, a wanted file copied, others left out."""
    if zipfile.is_zipfile(source):
        return _extract(source, _free_name(staging, source.stem), tally)
    if source.suffix.lower() not in suffixes:
        return None
    target = _free_name(staging, source.name)
    tally.add_files(source.name)
    tally.add_bytes(source.name, source.stat().st_size)
    shutil.copyfile(source, target)
    return target


def _free_name(folder: Path, name: str) -> Path:
    """``folder/name``, or ``name`` with a number added when two uploads share it."""
    name = re.sub(r"[\x00-\x1f/\\]", "_", name).lstrip(".") or "upload"
    candidate, n = folder / name, 1
    while candidate.exists():
        candidate, n = folder / f"{Path(name).stem}_{n}{Path(name).suffix}", n + 1
    return candidate


def _extract(archive: Path, dest: Path, tally: _Tally) -> Path:
    """Unpack ``archive`` into ``dest``; the caller removes ``dest`` if this raises."""
    upload, packed = archive.name, archive.stat().st_size
    try:
        with zipfile.ZipFile(archive) as zf:
            members = _checked_members(upload, zf.infolist(), packed, tally)
            dest.mkdir(parents=True, exist_ok=True)
            root, written = dest.resolve(), 0
            for info, parts in members:
                target = _target(upload, root, parts, info.filename)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                written += _write_member(upload, zf, info, target, tally)
                tally.check_ratio(upload, None, written, packed)
    except UnicodeDecodeError:
        raise LabError(
            "{upload} has a file name that cannot be read (not valid UTF-8); nothing was kept.", upload=upload
        ) from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, OSError) as err:
        raise LabError("{upload} could not be unpacked ({err}); nothing was kept.", upload=upload, err=err) from None
    return dest


def _checked_members(upload: str, infos: list[zipfile.ZipInfo], packed: int, tally: _Tally):
    """(member, path parts) to unpack, after every check that needs no writing."""
    members, declared = [], 0
    for info in infos:
        parts = _member_parts(upload, info)
        if parts is None:
            continue
        tally.add_files(upload)
        tally.check_ratio(upload, info.filename, info.file_size, info.compress_size)
        declared += info.file_size
        members.append((info, parts))
    tally.check_ratio(upload, None, declared, packed)
    tally.check_room(upload, declared)  # the bytes are counted as they are written
    return members


def _member_parts(upload: str, info: zipfile.ZipInfo) -> tuple[str, ...] | None:
    """The path parts of a member, None for one to leave out; refuses links and escapes."""
    member, kind = info.filename, stat.S_IFMT(info.external_attr >> 16)
    if kind == stat.S_IFLNK:
        raise LabError(
            "{upload}: {member!r} is a symbolic link, which uploads may not contain; nothing was kept.",
            upload=upload,
            member=member,
        )
    if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise LabError(
            "{upload}: {member!r} is not a plain file or folder; nothing was kept.", upload=upload, member=member
        )
    if info.flag_bits & 0x1:
        raise LabError(
            "{upload}: {member!r} is encrypted; upload a zip without a password.", upload=upload, member=member
        )
    name = member.replace("\\", "/")
    if name.startswith("/") or re.match(r"[A-Za-z]:", name) or ".." in name.split("/"):
        raise LabError(
            "{upload}: {member!r} points outside the archive (an absolute path or '..'); nothing was kept.",
            upload=upload,
            member=member,
        )
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    return None if not parts or parts[0] in SKIPPED_FOLDERS else parts


def _target(upload: str, root: Path, parts: tuple[str, ...], member: str) -> Path:
    target = root.joinpath(*parts).resolve()
    if not target.is_relative_to(root):
        raise LabError(
            "{upload}: {member!r} points outside the archive; nothing was kept.", upload=upload, member=member
        )
    return paths.check_allowed(target)


def _write_member(upload: str, zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, tally: _Tally) -> int:
    """Copy one member out, counting its bytes against the limits as they come."""
    written = 0
    with zf.open(info) as source, open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            written += len(chunk)
            tally.add_bytes(upload, len(chunk))
            tally.check_ratio(upload, info.filename, written, info.compress_size)
            out.write(chunk)
    return written
