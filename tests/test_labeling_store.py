"""The labeling store's files: whole lines only, nothing a resume throws away, any name kept."""

import json
import os
from pathlib import Path

from lab.labeling.batch import source_fields
from lab.labeling.store import DATA_FILE, FAILURES_FILE, LabelStore, read_rows


def record(key: str, **meta) -> dict:
    return {"id": key, "images": [f"images/{key}.png"], "messages": [], "meta": {"key": key, "status": "ok", **meta}}


def test_a_complete_last_line_without_its_newline_is_kept_on_resume(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    # Written by hand or by another tool: both records are whole, the last one lacks only its newline.
    (out / DATA_FILE).write_text(json.dumps(record("a")) + "\n" + json.dumps(record("b")), encoding="utf-8")
    with LabelStore(out) as store:
        assert store.done == {"a", "b"}
        store.add_record(record("c"))
    lines = (out / DATA_FILE).read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["a", "b", "c"]


def test_only_a_line_that_does_not_parse_is_cut_as_a_torn_tail(tmp_path):
    out = tmp_path / "ds"
    out.mkdir()
    (out / DATA_FILE).write_text(json.dumps(record("a")) + '\n{"id": "b", "images": ["ima', encoding="utf-8")
    (out / FAILURES_FILE).write_text('{"key": "x", "reason": "timeout"}', encoding="utf-8")  # whole: kept
    with LabelStore(out) as store:
        assert store.done == {"a"} and set(store.failed) == {"x"}
        store.add_record(record("c"))
        store.add_failure({"key": "y", "reason": "refused"})
    assert (out / DATA_FILE).read_bytes().endswith(b"\n")
    assert [row["id"] for row in read_rows(out / DATA_FILE)] == ["a", "c"]
    assert [row["key"] for row in read_rows(out / FAILURES_FILE)] == ["x", "y"]


def test_a_string_utf8_cannot_hold_is_written_escaped_and_reads_back_the_same(tmp_path):
    name = os.fsdecode(b"caf\xe9.png")  # a Linux file name that is not UTF-8: a lone surrogate in Python
    with LabelStore(tmp_path / "ds") as store:
        store.add_record(record("a", source=name))
        store.add_record(record("b", source="图片.png"))
    data = (tmp_path / "ds" / DATA_FILE).read_bytes()
    data.decode("utf-8")  # the file stays valid UTF-8
    rows = list(read_rows(tmp_path / "ds" / DATA_FILE))
    assert rows[0]["meta"]["source"] == name and os.fsencode(rows[0]["meta"]["source"]) == b"caf\xe9.png"
    assert rows[1]["meta"]["source"] == "图片.png" and "图片".encode() in data  # other lines keep their characters


def test_a_name_that_is_not_utf8_gets_a_readable_source_and_its_exact_bytes(tmp_path):
    folder = tmp_path / "pics"
    odd = Path(os.fsdecode(os.path.join(os.fsencode(folder), b"sub", b"caf\xe9.png")))
    fields = source_fields(odd, folder)
    assert fields == {"source": "sub/caf\\xe9.png", "source_bytes": b"sub/caf\xe9.png".hex()}
    json.dumps(fields, ensure_ascii=False).encode("utf-8")  # shown in the page as is
    assert folder / os.fsdecode(bytes.fromhex(fields["source_bytes"])) == odd
    assert source_fields(folder / "图片.png", folder) == {"source": "图片.png"}
