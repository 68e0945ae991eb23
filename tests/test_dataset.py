"""Dataset folder: reading and writing, the validator, the split, stats and the ``data check/split`` CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from lab import dataset as ds
from lab import dataset_check as check
from lab.cli import main
from lab.errors import BadImageError, ConfigError, DatasetError, localize
from lab.text import Msg

SAMPLE = Path(__file__).resolve().parent.parent / "data" / "sample"


def png(path: Path, color=(200, 30, 30), size=(8, 6)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return path


def record(rid: str, images: list[str], user="<image>Describe the component.", answer="A red button.") -> dict:
    return {
        "id": rid,
        "images": images,
        "messages": [
            {"role": "system", "content": "You describe UI components."},
            {"role": "user", "content": user},
            {"role": "assistant", "content": answer},
        ],
        "meta": {"labeler": "gpt-4o", "status": "ok"},
    }


def multi_turn(rid: str, image: str) -> dict:
    return {
        "id": rid,
        "images": [image],
        "messages": [
            {"role": "user", "content": "<image>这是什么组件？"},
            {"role": "assistant", "content": "这是一个环形图组件。"},
            {"role": "user", "content": "它有什么功能？"},
            {"role": "assistant", "content": "展示各部分占整体的比例。"},
        ],
    }


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "set"
    for i in range(4):
        png(root / "images" / f"{i:04d}.png", color=(i * 40, 100, 200))
    records = [record(f"{i:04d}", [f"images/{i:04d}.png"]) for i in range(3)] + [multi_turn("0003", "images/0003.png")]
    ds.write_records(root / "data.jsonl", records)
    return root


def test_read_write_and_absolute_images(folder):
    records = ds.load_records(folder)
    assert [r["id"] for r in records] == ["0000", "0001", "0002", "0003"]
    assert records[0]["images"] == ["images/0000.png"]
    absolute = ds.load_records(folder, absolute_images=True)
    assert Path(absolute[1]["images"][0]) == (folder / "images" / "0001.png").resolve()
    # a .jsonl file in the folder is a dataset too, with images relative to its folder
    assert ds.dataset_file(folder / "data.jsonl") == folder / "data.jsonl"
    assert ds.dataset_root(folder / "data.jsonl") == folder


def test_write_is_atomic_and_leaves_no_temp_files(folder):
    ds.write_records(folder / "data.jsonl", [record("x", [])])
    assert [p.name for p in folder.iterdir() if p.is_file()] == ["data.jsonl"]
    assert ds.load_records(folder)[0]["id"] == "x"


def test_append_flushes_and_repairs_a_half_line(tmp_path):
    file = tmp_path / "d" / "data.jsonl"
    ds.append_record(file, {"id": "1", "messages": []})
    assert file.read_text(encoding="utf-8").count("\n") == 1
    with open(file, "a", encoding="utf-8") as f:
        f.write('{"id": "broken"')  # a crash mid-write
    ds.append_record(file, {"id": "2", "messages": [], "note": "中文"})
    lines = file.read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[-1])["note"] == "中文"
    assert lines[1] == '{"id": "broken"'
    with pytest.raises(DatasetError, match="Line 2 .* not valid JSON"):
        ds.load_records(file)


def test_line_numbers_count_blank_lines(tmp_path):
    file = tmp_path / "data.jsonl"
    file.write_text('{"id": "a"}\n\n{"id": "b"}\n', encoding="utf-8")
    assert [(n, r["id"]) for n, r in ds.iter_records(file)] == [(1, "a"), (3, "b")]


def test_missing_dataset_is_one_sentence(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        ds.dataset_file(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="has no data.jsonl"):
        ds.dataset_file(tmp_path / "empty")


def crafted_faults(tmp_path) -> Path:
    """A dataset whose line N carries exactly the fault EXPECTED[N]."""
    root = tmp_path / "faulty"
    png(root / "images" / "ok.png")
    png(tmp_path / "outside.png")
    (root / "images" / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    good = record("g1", ["images/ok.png"])
    lines = [
        json.dumps(good),
        '{"id": "x", "messages": [',
        json.dumps({"id": "nomsg", "images": []}),
        json.dumps({**good, "id": "role", "messages": [{"role": "bot", "content": "hi"}, *good["messages"][1:]]}),
        json.dumps({**good, "id": "noans", "messages": good["messages"][:2]}),
        json.dumps(
            {**good, "id": "empty", "messages": [*good["messages"][:2], {"role": "assistant", "content": "  "}]}
        ),
        json.dumps(record("count", ["images/ok.png"], user="<image><image>Compare.")),
        json.dumps(record("missing", ["images/missing.png"])),
        json.dumps(record("corrupt", ["images/corrupt.png"])),
        json.dumps(record("escape", ["../outside.png"])),
        json.dumps({**good}),  # same id as line 1
        json.dumps(multi_turn("mt", "images/ok.png")),
        "",
        json.dumps(record("text-only", [], user="Describe a button.")),
    ]
    ds_file = root / "data.jsonl"
    ds_file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return ds_file


EXPECTED = {
    2: "not valid JSON",
    3: "no messages",
    4: "unknown role 'bot'",
    5: "no assistant answer",
    6: "empty assistant answer",
    7: "2 <image> placeholder(s) but 1 image(s)",
    8: "images/missing.png not found",
    9: "images/corrupt.png cannot be used",
    10: "outside the dataset folder",
    11: "duplicate id 'g1' (first on line 1)",
}


def test_validator_names_each_fault_with_its_line(tmp_path):
    report = check.validate_dataset(crafted_faults(tmp_path))
    assert report.total == 13 and report.valid == 3  # lines 1, 12 (multi-turn) and 14 (text only)
    by_line = {f.line: f for f in report.faults}
    assert len(report.faults) == len(EXPECTED) and set(by_line) == set(EXPECTED)
    for line, reason in EXPECTED.items():
        assert reason in str(by_line[line].reason), (line, by_line[line])
    assert by_line[5].record_id == "noans" and by_line[2].record_id is None
    assert "line 9 (id corrupt): image images/corrupt.png cannot be used" in str(by_line[9])
    assert "3 of 13 records" in str(report.summary()) and "2, 3, 4" in str(report.summary())


CJK = re.compile(r"[\u4e00-\u9fff]")


def test_every_fault_and_the_summary_have_a_chinese_form(tmp_path):
    report = check.validate_dataset(crafted_faults(tmp_path))
    for fault in report.faults:
        zh = localize(fault, "zh")
        assert zh.startswith(f"第 {fault.line} 行") and CJK.search(zh.split("：", 1)[1]), zh
        assert localize(fault, "en") == str(fault)
    duplicate = next(f for f in report.faults if f.line == 11)
    assert localize(duplicate, "zh") == "第 11 行（id g1）：id 'g1' 重复（首次出现在第 1 行）"
    summary = report.summary()
    assert isinstance(summary, Msg) and "3 of 13 records" in str(summary)
    assert localize(summary, "zh").startswith(f"{report.path} 中 13 条样本有 3 条有效") and "2, 3, 4" in localize(
        summary, "zh"
    )


def test_an_image_error_keeps_its_chinese_reason(tmp_path, monkeypatch):
    def refuse(path, max_pixels=None):
        raise BadImageError(path, Msg("empty file (0 bytes)"))

    monkeypatch.setattr(check, "open_image", refuse)
    png(tmp_path / "a.png")
    ds.write_records(tmp_path / "data.jsonl", [record("1", ["a.png"])])
    [fault] = check.validate_dataset(tmp_path).faults
    assert str(fault) == "line 1 (id 1): image a.png cannot be used: empty file (0 bytes)"
    assert localize(fault, "zh") == "第 1 行（id 1）：图片 a.png 无法使用：空文件（0 字节）"


def test_undecodable_image_is_skipped_when_images_are_not_checked(tmp_path):
    report = check.validate_dataset(crafted_faults(tmp_path), check_images=False)
    assert 9 not in {f.line for f in report.faults}
    assert 8 in {f.line for f in report.faults}  # a missing file is still reported


def test_valid_multi_turn_dataset_passes(folder):
    report = check.validate_dataset(folder)
    assert report.ok and report.total == report.valid == 4
    assert str(report.summary()) == f"All 4 records in {folder / 'data.jsonl'} are valid."


def test_conversation_must_end_with_an_answer(tmp_path):
    png(tmp_path / "a.png")
    rec = multi_turn("1", "a.png")
    rec["messages"].append({"role": "user", "content": "And then?"})
    ds.write_records(tmp_path / "data.jsonl", [rec])
    [fault] = check.validate_dataset(tmp_path).faults
    assert "ends without an assistant answer" in str(fault.reason)


def many(tmp_path, n: int) -> Path:
    return ds.write_records(tmp_path / "many" / "data.jsonl", [record(f"r{i}", [], user="Hi.") for i in range(n)])


def test_split_is_deterministic_and_seeded(tmp_path):
    file = many(tmp_path, 200)
    train, val = ds.split_dataset(file, 0.2, seed=7)
    again = ds.split_dataset(file, 0.2, seed=7)
    assert (train, val) == again
    assert len(train) + len(val) == 200 and 20 <= len(val) <= 60
    assert not {r["id"] for r in train} & {r["id"] for r in val}
    other = ds.split_dataset(file, 0.2, seed=8)[1]
    assert {r["id"] for r in other} != {r["id"] for r in val}
    # file order is kept within each side
    assert [r["id"] for r in val] == sorted((r["id"] for r in val), key=lambda s: int(s[1:]))


def test_appending_records_does_not_move_the_others(tmp_path):
    file = many(tmp_path, 50)
    _, val_before = ds.split_dataset(file, 0.3)
    for i in range(50, 80):
        ds.append_record(file, record(f"r{i}", [], user="Hi."))
    _, val_after = ds.split_dataset(file, 0.3)
    before = {r["id"] for r in val_before}
    after = {r["id"] for r in val_after}
    assert before == {i for i in after if int(i[1:]) < 50}


def test_split_keeps_one_validation_record_and_checks_the_ratio(tmp_path):
    file = many(tmp_path, 2)
    train, val = ds.split_dataset(file, 0.01)
    assert len(train) == 1 and len(val) == 1
    assert ds.split_dataset(file, 0.0)[1] == []
    assert ds.split_dataset(ds.write_records(tmp_path / "one.jsonl", [record("a", [])]), 0.5)[1] == []
    with pytest.raises(ConfigError, match="validation ratio"):
        ds.split_dataset(file, 1.0)


def test_write_split_and_the_split_cli(folder, capsys):
    assert main(["data", "split", str(folder), "--val-ratio", "0.25", "--seed", "3"]) == 0
    train, val = ds.load_records(folder / "train.jsonl"), ds.load_records(folder / "val.jsonl")
    expected = ds.split_dataset(folder, 0.25, seed=3)
    assert (train, val) == expected and len(val) >= 1
    assert f"{len(train)} records to {folder / 'train.jsonl'}" in capsys.readouterr().out
    # splits of a variant file carry its name, and their image paths still resolve
    ds.write_records(folder / "data_zh.jsonl", ds.load_records(folder))
    paths = ds.write_split(folder / "data_zh.jsonl", 0.5)
    assert [p.name for p in paths] == ["data_zh_train.jsonl", "data_zh_val.jsonl"]
    assert check.validate_dataset(paths[1]).ok


def test_stats_count_images_turns_and_languages(folder):
    stats = ds.dataset_stats(folder)
    assert (stats.records, stats.images, stats.turns, stats.multi_turn) == (4, 4, 5, 1)
    assert stats.languages == {"en": 3, "zh": 1}


def test_guess_language():
    assert ds.guess_language("这是一个环形图组件，用于展示数据。") == "zh"
    assert ds.guess_language('{"组件名": "环形图组件", "功能": ["展示 KPI 数据"]}') == "zh"
    assert ds.guess_language("A donut chart that shows each share of the total.") == "en"
    assert ds.guess_language("The label reads 确定 (OK) in the dialog footer of the settings page.") == "en"


def test_list_datasets_finds_workspace_folders(lab_home, folder):
    data = lab_home / "data"
    for name in ("b", "a"):
        ds.write_records(data / name / "data.jsonl", ds.load_records(folder))
    (data / "not_a_dataset").mkdir()
    ds.write_records(data / "a" / "val.jsonl", [])
    found = ds.list_datasets()
    assert found[:2] == [data / "a", data / "b"]
    assert data / "not_a_dataset" not in found
    assert (SAMPLE in found) == (SAMPLE / "data.jsonl").is_file()
    assert ds.list_datasets(include_variants=True)[:2] == [data / "a", data / "a" / "val.jsonl"]


def test_check_cli_prints_each_fault_and_exits_1(tmp_path, capsys):
    assert main(["data", "check", str(crafted_faults(tmp_path))]) == 1
    out = capsys.readouterr().out
    assert "line 4 (id role): message 1 has unknown role 'bot'" in out
    assert out.strip().splitlines()[-1].startswith("3 of 13 records")


def test_check_cli_on_a_valid_dataset_and_on_nothing(folder, tmp_path, capsys):
    assert main(["data", "check", str(folder)]) == 0
    assert "All 4 records" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "missing")]) == 2
    assert capsys.readouterr().err.startswith("error: Dataset not found")


def test_sample_dataset_is_all_valid(capsys):
    assert main(["data", "check", str(SAMPLE)]) == 0
    report = check.validate_dataset(SAMPLE)
    assert report.ok and report.total >= 10
    assert "All" in capsys.readouterr().out


def test_sample_split_and_stats_agree():
    stats = ds.dataset_stats(SAMPLE)
    train, val = ds.split_dataset(SAMPLE, 0.1)
    assert len(train) + len(val) == stats.records and val
    assert stats.images >= stats.records // 2
