"""The Dataset tab through gradio_client on the launched app."""

import json
import zipfile
from pathlib import Path

from gradio_client import handle_file

from lab import paths


def test_show_check_split_export_import(launch_app, sample_dataset, tmp_path):
    app, ctx, client = launch_app(model="")
    sample = str(sample_dataset)

    summary, gallery, table, page, page_line = client.predict(sample, api_name="/dataset_show")
    assert summary.startswith("60 records · 60 images") and (page, page_line) == (1, "Page 1 of 3")
    assert len(gallery) == 24 and len(table["data"]) == 24
    assert table["data"][0][2].startswith("A donut chart")

    report = client.predict(sample, api_name="/dataset_check")
    assert report.startswith("All 60 records") and "valid" in report

    message, archive = client.predict(sample, "llamafactory", api_name="/dataset_export")
    assert message.splitlines()[0].endswith("data.json.") and "LLaMA-Factory: set dataset_dir" in message
    with zipfile.ZipFile(archive) as z:
        names = set(z.namelist())
    assert {"data.json", "dataset_info.json"} <= names and sum(
        n.startswith("images/") and n.endswith(".png") for n in names
    ) == 60

    status, chosen = client.predict([handle_file(archive)], "imported", api_name="/dataset_import")
    assert status.startswith("All 60 records"), status
    imported = paths.datasets_dir() / "imported"
    assert Path(chosen["value"]) == imported and (imported / "data.jsonl").is_file()

    split_status = client.predict(str(imported), 0.2, 7, api_name="/dataset_split")
    assert "train.jsonl" in split_status and "val.jsonl" in split_status
    train = (imported / "train.jsonl").read_text().splitlines()
    val = (imported / "val.jsonl").read_text().splitlines()
    assert len(train) + len(val) == 60 and 3 <= len(val) <= 24
    assert {json.loads(line)["id"] for line in train}.isdisjoint(json.loads(line)["id"] for line in val)


def test_bad_input_is_one_sentence(launch_app, tmp_path):
    app, ctx, client = launch_app(model="")
    summary, gallery, table, page, page_line = client.predict(str(tmp_path / "nowhere"), api_name="/dataset_show")
    assert "nowhere" in summary and "Traceback" not in summary and gallery == [] and page_line == ""
    gallery, table, page, page_line = client.predict(str(tmp_path / "nowhere"), 2, api_name="/dataset_page")
    assert "nowhere" in page_line and "Traceback" not in page_line and gallery == [] and page == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "messages": []}\nnot json\n')
    report = client.predict(str(bad), api_name="/dataset_check")
    assert "line 1" in report and "line 2" in report
    status, _ = client.predict(None, "x", api_name="/dataset_import")
    assert status == "Choose a file to import first."


def test_a_chinese_page_gets_chinese_messages(launch_app, sample_dataset, tmp_path):
    from gradio_client import Client

    app, ctx, _ = launch_app(model="")
    client = Client(app.local_url, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    summary, _, _, _, page_line = client.predict(str(sample_dataset), api_name="/dataset_show")
    assert summary.startswith("60 条样本 · 60 张图片"), summary
    assert page_line == "第 1 页，共 3 页"
    missing, *_ = client.predict(str(tmp_path / "nowhere"), api_name="/dataset_show")
    assert "nowhere" in missing and any("\u4e00" <= ch <= "\u9fff" for ch in missing), missing
    status, _ = client.predict(None, "x", api_name="/dataset_import")
    assert status == "请先选择要导入的文件。"
