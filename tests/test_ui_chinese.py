"""A Chinese page gets the core's errors and reports in Chinese, from every tab."""

from __future__ import annotations

import re
import time

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture
def zh_client(launch_app):
    """A page whose browser asks for Chinese (no --lang), on an app with no model loaded."""
    app, ctx, _ = launch_app(model="")
    return Client(app.local_url, verbose=False, headers={"Accept-Language": "zh-CN,zh;q=0.9"}), app


def _chinese_error(call) -> str:
    with pytest.raises(AppError) as caught:
        call()
    message = str(caught.value)
    assert CJK.search(message) and "Traceback" not in message, message
    return message


def test_every_tab_refuses_in_chinese(zh_client, sample_dataset, lab_home):
    client, _ = zh_client
    # Chat and Evaluate need a model: the refusal is the core's, in Chinese.
    message = _chinese_error(lambda: client.predict({"text": "你好", "files": []}, "", 0.0, 0.9, 8, True, False,
                                                    api_name="/chat"))  # fmt: skip
    assert "尚未加载模型" in message
    _chinese_error(lambda: client.predict("(validation split of the loaded run)", True, 4, 8, 0, "gain",
                                          api_name="/evaluate"))  # fmt: skip
    # Export without a run, and a run that does not exist.
    assert "请选择要导出的训练任务" in _chinese_error(lambda: client.predict(
        "", "", "", "auto", "cpu", False, "", "", False, 4096, 1, 0.9, api_name="/export"))
    _chinese_error(lambda: client.predict("no-such-run", "", "", "auto", "cpu", False, "", "", False, 4096, 1, 0.9,
                                          api_name="/export"))  # fmt: skip
    # A run that is not there is refused at once (the header's controls).
    _chinese_error(lambda: client.predict("no-such-run", api_name="/model_load_run"))
    # One that is there but cannot be loaded fails in the background: the header says why.
    (lab_home / "checkpoints" / "broken-run").mkdir(parents=True)
    client.predict("broken-run", api_name="/model_load_run")
    deadline = time.time() + 30
    while "模型加载失败" not in (status := client.predict(api_name="/model_status")) and time.time() < deadline:
        time.sleep(0.3)
    assert status.startswith("模型加载失败：") and CJK.search(status.removeprefix("模型加载失败：")), status


def test_reports_and_status_lines_are_chinese(zh_client, sample_dataset, tmp_path):
    client, _ = zh_client
    report = client.predict(str(sample_dataset), api_name="/dataset_check")
    assert report == f"{sample_dataset / 'data.jsonl'} 中的 60 条样本全部有效。", report
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "1", "messages": []}\nnot json\n', encoding="utf-8")
    faults = client.predict(str(bad), api_name="/dataset_check").splitlines()
    assert len(faults) >= 3 and all(CJK.search(line) for line in faults), faults
    assert "第 1 行" in faults[1] and "第 2 行" in faults[2], faults
    # The labeling tab: a run refused for want of a key says so in Chinese.
    status = client.predict(str(sample_dataset / "images"), "zh_set", "sample_caption", "en", 2,
                            "openai", "", "", "", 0.0, 256, 262144, False, False, 4, 0, 10,
                            api_name="/label_start")[0]  # fmt: skip
    assert CJK.search(status) and "API" in status, status
