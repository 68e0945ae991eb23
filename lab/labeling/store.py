"""The dataset folder a labeling run writes: nothing lost, nothing done twice.

Layout (the dataset contract of DESIGN.md, plus three files of the labeler's own)::

    DATASET/data.jsonl       one training record per labeled image, appended as each finishes
    DATASET/images/          the labeled images, copied in and named by a hash of their bytes
    DATASET/failures.jsonl   one line per failed attempt: key, source, kind, reason
    DATASET/rejected.jsonl   records a person rejected in review (kept so they are not redone)
    DATASET/label_job.json   how the last run was set up (never the API key)

Every image is keyed by the hash of its bytes and of the prompt (:func:`item_key`), so
renaming files does not relabel them and changing the prompt does. A record is
written with one ``write`` of a whole line, so SIGKILL leaves at most a torn last
line (one that does not parse), which :meth:`LabelStore.open` cuts off before appending
again; a whole record that only lacks its newline is kept. Only one writer at a time:
a lock file (released by the OS when a process dies) refuses a second.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from lab.errors import BusyError, DatasetError
from lab.file_lock import FileLock
from lab.paths import check_allowed

DATA_FILE = "data.jsonl"
FAILURES_FILE = "failures.jsonl"
REJECTED_FILE = "rejected.jsonl"
JOB_FILE = "label_job.json"
LOCK_FILE = ".labeling.lock"
IMAGES_DIR = "images"
# fsync is what protects against power loss; SIGKILL only needs the write() to have
# happened. Syncing at most this often keeps a few hundred records a second cheap.
SYNC_EVERY_S = 0.5


def item_key(image_sha: str, prompt_sha: str) -> str:
    """The identity of one labeling job: these image bytes asked with this prompt."""
    return hashlib.sha256(f"{image_sha}:{prompt_sha}".encode()).hexdigest()[:16]


def file_sha(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks so huge images do not sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Appender:
    """A JSONL file opened for appending whole lines, flushed each line, fsynced in batches."""

    def __init__(self, path: Path):
        _cut_torn_tail(path)
        self.file = open(path, "ab")
        self.last_sync = time.monotonic()

    def write(self, row: dict) -> None:
        self.file.write(_json_line(row))
        self.file.flush()
        if time.monotonic() - self.last_sync > SYNC_EVERY_S:
            self.sync()

    def sync(self) -> None:
        os.fsync(self.file.fileno())
        self.last_sync = time.monotonic()

    def close(self) -> None:
        if not self.file.closed:
            self.sync()
            self.file.close()


def _json_line(row: dict) -> bytes:
    """``row`` as one UTF-8 line. A string no UTF-8 can hold (a lone surrogate: a file name that is
    not UTF-8, an answer with a broken escape) is written as a JSON escape, so it reads back the same."""
    line = json.dumps(row, ensure_ascii=False) + "\n"
    try:
        return line.encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(row) + "\n").encode("ascii")


def _cut_torn_tail(path: Path) -> None:
    """End the file on a whole line before appending: a last line without its newline is kept
    (the newline added) when it parses, and cut when it does not (a run killed mid-write)."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        if f.read(1) == b"\n":
            return
        f.seek(0)
        data = f.read()
        start = data.rfind(b"\n") + 1
        if _is_record(data[start:]):
            f.write(b"\n")
        else:
            f.truncate(start)


def _is_record(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line.decode("utf-8")), dict)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def read_rows(path: Path):
    """The JSON objects of a JSONL file; torn or hand-broken lines are skipped."""
    if not path.is_file():
        return
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                yield row


def record_key(record: dict) -> str | None:
    """The item key a labeled record carries in its meta (None for records made elsewhere)."""
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    return meta.get("key")


class DatasetLock:
    """An exclusive lock on a dataset folder; a second holder gets a BusyError at once."""

    def __init__(self, folder: Path):
        self.path = Path(folder) / LOCK_FILE
        self._lock = FileLock(self.path)

    def acquire(self) -> DatasetLock:
        if not self._lock.acquire():
            raise BusyError(
                "Another labeling run or review is writing to {parent}; stop it or wait for it to end.",
                parent=self.path.parent,
            )
        return self

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> DatasetLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


class LabelStore:
    """The dataset folder during a run: what is done, what failed, and the appenders."""

    def __init__(self, folder: str | Path):
        self.folder = check_allowed(Path(folder).expanduser(), write=True)
        self.done: set[str] = set()
        self.failed: dict[str, dict] = {}  # key -> the latest failure row, for keys not done
        self._lock = DatasetLock(self.folder)
        self._data: _Appender | None = None
        self._failures: _Appender | None = None

    def open(self) -> LabelStore:
        """Take the lock, cut torn lines, and read what is done and what failed."""
        if self.folder.exists() and not self.folder.is_dir():
            raise DatasetError("{folder} is a file; give a folder for the dataset.", folder=self.folder)
        self._lock.acquire()
        try:
            (self.folder / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
            self._data = _Appender(self.folder / DATA_FILE)
            self._failures = _Appender(self.folder / FAILURES_FILE)
        except BaseException:
            self.close()
            raise
        self.done, self.failed = done_and_failed(self.folder)
        return self

    def close(self) -> None:
        for appender in (self._data, self._failures):
            if appender is not None:
                appender.close()
        self._data = self._failures = None
        self._lock.release()

    def __enter__(self) -> LabelStore:
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()

    def copy_image(self, source: Path, image_sha: str) -> str:
        """Copy ``source`` into ``images/`` (once per content) and return its relative path."""
        relative = f"{IMAGES_DIR}/{image_sha[:16]}{source.suffix.lower()}"
        target = self.folder / relative
        if not target.exists():
            # A fixed temporary name is safe: the dataset lock means one writer, and a
            # leftover from a killed run is simply overwritten.
            tmp = target.with_name(f".{target.name}.tmp")
            try:
                shutil.copyfile(source, tmp)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
        return relative

    def add_record(self, record: dict) -> None:
        """Append a training record (its image already copied in) and mark its key done."""
        key = record["meta"]["key"]
        self._data.write(record)
        self.done.add(key)
        self.failed.pop(key, None)

    def add_failure(self, row: dict) -> None:
        """Append a failure row (key, source, status, kind, reason)."""
        self._failures.write(row)
        self.failed[row["key"]] = row


def done_and_failed(folder: Path) -> tuple[set[str], dict[str, dict]]:
    """Keys already labeled (or rejected in review), and the latest failure of every key not done."""
    folder = Path(folder)
    done = {key for key in map(record_key, read_rows(folder / DATA_FILE)) if key}
    done |= {key for key in map(record_key, read_rows(folder / REJECTED_FILE)) if key}
    failed = {row["key"]: row for row in read_rows(folder / FAILURES_FILE) if row.get("key") and row["key"] not in done}
    return done, failed


def save_job(folder: Path, job: dict) -> None:
    """Write ``label_job.json`` atomically (the caller leaves the API key out)."""
    path = Path(folder) / JOB_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(job, ensure_ascii=False, indent=2), encoding="utf-8")
    os.replace(tmp, path)


def load_job(folder: str | Path) -> dict | None:
    """The setup of the last run in ``folder``, or None."""
    path = Path(folder).expanduser() / JOB_FILE
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def job_settings(prompt, labeler_settings: dict, *, preset: str = "", lang: str = "", limit: int | None = None) -> dict:
    """What ``label_job.json`` keeps of a run, so it can be resumed or retried with the same setup."""
    return {
        "preset": preset,
        "lang": lang,
        "limit": limit,
        "prompt": {
            "system": prompt.system,
            "user": prompt.user,
            "want_json": prompt.want_json,
            "expected_keys": list(prompt.expected_keys),
            "sha": prompt.sha,
        },
        "labeler": {k: v for k, v in labeler_settings.items() if k != "api_key"},
    }
