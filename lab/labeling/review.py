"""Reviewing a labeled dataset: read its items and failures, edit answers, reject items.

Rejected records leave ``data.jsonl`` (so nothing trains on them) for
``rejected.jsonl``, which also keeps a rerun from labeling them again. Saving takes the
dataset's lock, so a review cannot clobber a run that is still appending.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lab.dataset import write_records
from lab.errors import DatasetError
from lab.labeling.answers import EMPTY_ANSWER, check_answer
from lab.labeling.store import DATA_FILE, REJECTED_FILE, DatasetLock, done_and_failed, read_rows
from lab.paths import check_allowed
from lab.text import Msg, read_saved


def _answer(record: dict) -> str:
    messages = record.get("messages") or []
    return next((m.get("content", "") for m in reversed(messages) if m.get("role") == "assistant"), "")


def list_items(out_dir: str | Path, limit: int | None = None) -> list[dict]:
    """The labeled items, newest last: id, absolute image path, source file, answer, labeler."""
    folder = check_allowed(Path(out_dir).expanduser())
    items = []
    for record in read_rows(folder / DATA_FILE):
        images = record.get("images") or []
        meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
        items.append(
            {
                "id": str(record.get("id", "")),
                "image": str((folder / images[0]).resolve()) if images else "",
                "source": meta.get("source", ""),
                "answer": _answer(record),
                "labeler": meta.get("labeler", ""),
                "edited": bool(meta.get("edited")),
            }
        )
    return items[-limit:] if limit else items


_FAILURE_FIELDS = ("source", "status", "kind", "reason", "time", "key")


def list_failures(out_dir: str | Path) -> list[dict]:
    """The failures not yet put right by a retry: source, status, reason (a :class:`~lab.text.Msg`), time."""
    _, failed = done_and_failed(check_allowed(Path(out_dir).expanduser()))
    rows = []
    for row in failed.values():
        # Older failure files have the English reason only (and reason_zh): the English is shown.
        reason = read_saved(row, "reason")
        rows.append({k: reason if k == "reason" else row.get(k, "") for k in _FAILURE_FIELDS})
    return rows


@dataclass
class ReviewSaved:
    edited: int
    rejected: int

    def summary(self) -> Msg:
        """One sentence for the page."""
        return Msg(
            "Saved: {edited} answer(s) edited, {rejected} item(s) rejected.", edited=self.edited, rejected=self.rejected
        )


def save_review(
    out_dir: str | Path,
    edits: dict[str, str] | None = None,
    rejects: Iterable[str] = (),
    *,
    want_json: bool = False,
    expected_keys: Iterable[str] = (),
) -> ReviewSaved:
    """Apply edited answers (``id -> text``) and rejections to the dataset in ``out_dir``.

    With ``want_json`` an edited answer must still be a JSON object with the expected
    keys; the first one that is not is refused with its id, and nothing is written.
    """
    folder = check_allowed(Path(out_dir).expanduser(), write=True)
    edits = {k: v for k, v in (edits or {}).items()}
    rejects = set(rejects)
    if not (folder / DATA_FILE).is_file():
        raise DatasetError("{folder} has no {data_file} to review.", folder=folder, data_file=DATA_FILE)
    for record_id, text in edits.items():
        verdict = check_answer(text, want_json=want_json, expected_keys=tuple(expected_keys))
        if verdict.status == "invalid" or not text.strip():
            reason = verdict.reason or EMPTY_ANSWER
            raise DatasetError(
                "The edited answer of item {record_id} is not usable: {reason}.", record_id=record_id, reason=reason
            )
    with DatasetLock(folder):
        records = list(read_rows(folder / DATA_FILE))
        known = {str(r.get("id")) for r in records}
        unknown = (set(edits) | rejects) - known
        if unknown:
            raise DatasetError(
                "No item with id {unknown} in {folder}.", unknown=sorted(unknown)[0], folder=folder / DATA_FILE
            )
        kept, edited, rejected = [], 0, []
        for record in records:
            record_id = str(record.get("id"))
            if record_id in rejects:
                rejected.append({**record, "meta": {**record.get("meta", {}), "status": "rejected"}})
                continue
            if record_id in edits and edits[record_id].strip() != _answer(record).strip():
                _set_answer(record, edits[record_id].strip())
                edited += 1
            kept.append(record)
        if rejected:
            write_records(folder / REJECTED_FILE, [*read_rows(folder / REJECTED_FILE), *rejected])
        write_records(folder / DATA_FILE, kept)
    return ReviewSaved(edited, len(rejected))


def _set_answer(record: dict, text: str) -> None:
    for message in reversed(record.get("messages") or []):
        if message.get("role") == "assistant":
            message["content"] = text
            break
    record["meta"] = {**(record.get("meta") or {}), "edited": True}
