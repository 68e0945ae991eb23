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
    # Chat and Evaluate need a model: the refusal is the core's, in Chinese. (The forms' fields by name.)
    message = _chinese_error(
        lambda: client.predict(message={"text": "你好", "files": []}, max_new_tokens=8, api_name="/chat")
    )
    assert "尚未加载模型" in message
    progress, summary, *_ = client.predict(
        source="(validation split of the loaded run)", batch_size=4, api_name="/evaluate"
    )  # shown where the result would go
    assert progress == "" and CJK.search(summary) and "Traceback" not in summary, summary
    # Export without a run, and a run that does not exist.
    assert "请选择要导出的训练任务" in _chinese_error(lambda: client.predict(run="", out="", api_name="/export"))
    _chinese_error(lambda: client.predict(run="no-such-run", out="", api_name="/export"))
    # The header's controls refuse a run that is not there at once, to the one who asked.
    assert "找不到训练任务" in _chinese_error(lambda: client.predict("no-such-run", api_name="/model_load_run"))
    # A run that is there but cannot be loaded fails in the background: the header says why.
    (lab_home / "checkpoints" / "empty-run").mkdir(parents=True)
    client.predict("empty-run", api_name="/model_load_run")
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
    status = client.predict(
        str(sample_dataset / "images"),
        "zh_set",
        "sample_caption",
        "en",
        2,
        "openai",
        "",
        "",
        "",
        0.0,
        256,
        262144,
        False,
        False,
        4,
        0,
        10,
        api_name="/label_start",
    )[0]
    assert CJK.search(status) and "API" in status, status


# ---------------------------------------------------------------- the handler every event goes through


def _page(lang=None, accept="en-US"):
    """(ctx, request) of a page: the switch's cookie ``lang``, the browser's ``accept``."""
    from types import SimpleNamespace

    ctx = SimpleNamespace(settings=SimpleNamespace(lang=None))
    return ctx, SimpleNamespace(cookies={"vlm-lab-lang": lang} if lang else {}, headers={"accept-language": accept})


def test_a_handler_gets_the_page_language_and_shows_errors_in_it():
    import gradio as gr

    from lab.errors import ConfigError
    from lab.text import Msg
    from lab.ui.i18n import handler

    def show(path, lang):
        if not path:
            raise ConfigError("Give the dataset a name, e.g. my_labels.")
        return f"{lang}: {path}"

    ctx, request = _page(accept="zh-CN,zh;q=0.9")
    assert handler(ctx, show)(request, "a") == "zh: a"
    assert handler(ctx, show)(_page("en", accept="zh-CN")[1], "a") == "en: a"  # the switch beats the browser
    with pytest.raises(gr.Error) as toast:
        handler(ctx, show)(request, "")
    assert toast.value.message == "请给数据集起个名字，例如 my_labels。"
    # A status box shows the sentence instead: the outputs come from on_error.
    assert handler(ctx, show, on_error=lambda s: (s, None))(request, "") == (
        "请给数据集起个名字，例如 my_labels。",
        None,
    )

    def stream(n, lang):
        yield Msg("{n} records → {path}", n=n, path="p").localize(lang)
        raise ConfigError("Give the dataset a name, e.g. my_labels.")

    steps = handler(ctx, stream, on_error=str)(request, 2)
    assert list(steps) == ["2 条样本 → p", "请给数据集起个名字，例如 my_labels。"]


def test_a_handler_names_its_api_parameters_after_the_function():
    import inspect
    import typing

    import gradio as gr

    from lab.ui.i18n import handler

    def on_select(summary_path, order, evt: gr.SelectData, *, request, lang):
        return request, lang

    ctx, request = _page()
    wrapped = handler(ctx, on_select)
    assert list(inspect.signature(wrapped).parameters) == ["request", "summary_path", "order", "evt"]
    hints = typing.get_type_hints(wrapped)  # how Gradio finds the request and the event data
    assert hints["request"] is gr.Request and hints["evt"] is gr.SelectData
    assert wrapped(request, "s", "gain", None) == (request, "en")  # the request too, when asked for


def test_a_handler_passes_a_forms_fields_on_by_name():
    import inspect

    from lab.errors import ConfigError
    from lab.ui.i18n import handler

    def on_send(message, *, lang, **values):  # a form's widgets come as the event's inputs_kwargs
        if values.get("temperature", 0) < 0:
            raise ConfigError(
                "{name} cannot be negative, not {value}.", name="temperature", value=values["temperature"]
            )
        return message, lang, values

    ctx, request = _page(accept="zh-CN")
    wrapped = handler(ctx, on_send, on_error=str)
    assert list(inspect.signature(wrapped).parameters) == ["request", "message", "values"]
    assert wrapped(request, "hi", temperature=0.5, top_p=0.9) == ("hi", "zh", {"temperature": 0.5, "top_p": 0.9})
    assert wrapped(request, "hi", temperature=-1) == "temperature 不能为负数，而不是 -1。"


def test_labels_are_english_keys_translated_from_the_catalog():
    from lab.ui.i18n import build_i18n, t

    assert t("Start / resume").key == "Start / resume"
    assert t("Evaluate", context="button").key == "button\x04Evaluate"
    t("Evaluate")
    translations = build_i18n().translations_dict
    assert translations["en"]["Start / resume"] == "Start / resume"
    assert translations["zh"]["Start / resume"] == "开始 / 继续"
    assert (
        translations["en"]["button\x04Evaluate"] == "Evaluate"
        and translations["zh"]["button\x04Evaluate"] == "开始评估"
    )
    assert translations["zh"]["Evaluate"] == "评估" and translations["zh"]["common.runs"] == "运行记录"
    assert translations["en"]["common.complete"] == "Complete"  # Gradio's own words its English lacks


def test_table_headers_follow_the_page():
    from lab.ui.i18n import columns

    assert columns(["id", "rougeL base", "gain", "bleu"], "zh") == ["编号", "rougeL 基座", "提升", "bleu"]
    assert columns(["id", "rougeL base"], "en") == ["id", "rougeL base"]
