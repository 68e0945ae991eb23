"""Judging answers: code fences, JSON parsing, expected keys, refusals."""

import pytest

from lab.errors import localize
from lab.labeling.answers import check_answer, json_body, looks_like_refusal, parse_json_answer, strip_fences


@pytest.mark.parametrize(
    "text, inside",
    [
        ('```json\n{"a": 1}\n```', '{"a": 1}'),
        ('```\n{"a": 1}\n```', '{"a": 1}'),
        ('Here you go:\n```JSON\n{"a": 1}\n```\nAnything else?', '{"a": 1}'),
        ('  {"a": 1}  ', '{"a": 1}'),
    ],
)
def test_strip_fences(text, inside):
    assert strip_fences(text) == inside


def test_parse_json_forgives_words_around_the_object():
    assert parse_json_answer('Sure! {"label": "cart", "reason": "x"} Hope it helps.') == {
        "label": "cart",
        "reason": "x",
    }
    assert json_body('Sure! {"label": "cart"} Hope it helps.') == '{"label": "cart"}'


def test_parse_json_error_says_where():
    with pytest.raises(ValueError, match="not valid JSON .*line 1 column"):
        parse_json_answer('{"label": "cart", }')


def test_check_answer_keeps_the_clean_json_and_reports_missing_keys():
    good = check_answer(
        '```json\n{"组件名": "环形图", "功能": []}\n```', want_json=True, expected_keys=["组件名", "功能"]
    )
    assert good.ok and good.text == '{"组件名": "环形图", "功能": []}' and good.parsed["组件名"] == "环形图"
    missing = check_answer('{"组件名": "环形图"}', want_json=True, expected_keys=["组件名", "功能"])
    assert missing.status == "invalid" and str(missing.reason) == "JSON lacks the key(s) 功能"
    not_object = check_answer("[1, 2]", want_json=True, expected_keys=["a"])
    assert not_object.status == "invalid" and "list" in str(not_object.reason)
    broken = check_answer('{"a": ', want_json=True, expected_keys=["a"])
    assert broken.status == "invalid" and str(broken.reason).startswith("not valid JSON")


def test_check_answer_plain_text_cut_off_and_empty():
    assert check_answer("A red button.").ok
    assert str(check_answer("A red", finish_reason="length").reason) == "answer cut off at the max tokens limit"
    assert str(check_answer("   ").reason) == "empty answer"
    assert check_answer(None).status == "invalid"


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I cannot identify people in images.",
        "Sorry, I can't assist with this request.",
        "抱歉，我无法处理这张图片。",
        "我不能识别图中的人物。",
    ],
)
def test_refusals_are_detected(text):
    assert looks_like_refusal(text)
    assert check_answer(text).status == "refused"


@pytest.mark.parametrize(
    "text",
    [
        'A sign that reads "Sorry, we are closed".',
        "一个按钮，写着“抱歉”。",
        "A dialog box saying I can't connect to the server, with a retry button.",
    ],
)
def test_captions_that_quote_apologies_are_not_refusals(text):
    assert not looks_like_refusal(text)
    assert check_answer(text).ok


def test_refusal_from_the_api_field_or_content_filter():
    assert check_answer("", refusal="I can't help").status == "refused"
    assert check_answer("partial", finish_reason="content_filter").status == "refused"


@pytest.mark.parametrize(
    "kwargs, en, zh",
    [
        (dict(text=""), "empty answer", "回答为空"),
        (dict(text="a cart", finish_reason="length"), "answer cut off", "回答达到最大 token 数被截断"),
        (dict(text="I'm sorry, I can't help with that."), "refused: I'm sorry", "拒绝回答：I'm sorry"),
        (dict(text='{"a": ', want_json=True), "not valid JSON", "不是有效的 JSON（第 1 行"),
        (dict(text="[1, 2]", want_json=True), "JSON is a list", "JSON 是 list，不是对象"),
        (dict(text='{"a": 1}', want_json=True, expected_keys=["a", "b"]), "JSON lacks the key(s) b", "JSON 缺少键 b"),
    ],
)
def test_reasons_have_a_chinese_form(kwargs, en, zh):
    reason = check_answer(kwargs.pop("text"), **kwargs).reason
    assert str(reason).startswith(en) and localize(reason, "zh").startswith(zh)
