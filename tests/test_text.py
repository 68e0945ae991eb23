"""Msg: an English template with values, shown in any language, never silently flattened to one."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from lab import text
from lab.endpoint_client import EndpointError
from lab.errors import BadImageError, ConfigError, LabError, localize
from lab.text import LANGS, Msg, find_langs, join, msg_of, read_saved, saved_fields


def test_the_english_is_the_template_and_the_catalog_gives_the_chinese():
    msg = Msg("{n} image(s) ready in {folder}.", n=3, folder=Path("/up/a"))
    assert str(msg) == localize(msg, "en") == "3 image(s) ready in /up/a."
    assert localize(msg, "zh") == msg.localize("zh") == "3 张图片已放到 /up/a。"
    assert (
        localize(
            Msg("Exported {run} to {out} in {seconds:.1f} s: {files}", run="r", out="o", seconds=2.345, files="a"), "zh"
        )
        == "已将 r 导出到 o，用时 2.3 秒：a"
    )  # format specs kept
    assert localize(msg, "xx") == str(msg)  # a language without a catalog reads English
    assert localize(Msg("Not in any catalog: {x}.", x=1), "zh") == "Not in any catalog: 1."
    assert localize(Msg(""), "zh") == "" and not Msg("") and Msg("empty answer")


def test_values_that_are_messages_or_errors_follow_the_language():
    reason = Msg("empty file (0 bytes)")
    inner = ConfigError("{path}: file not found.", path="p.yaml")
    msg = Msg("image {name} cannot be used: {reason}", name="a.png", reason=reason)
    assert str(msg) == "image a.png cannot be used: empty file (0 bytes)"
    assert localize(msg, "zh") == "图片 a.png 无法使用：空文件（0 字节）"
    assert (
        localize(Msg("Could not start the multi-GPU run: {err}", err=inner), "zh")
        == "无法启动多卡训练：p.yaml：文件不存在。"
    )
    assert localize(BadImageError("x.png", reason), "zh") == "x.png：空文件（0 字节）"
    both = join(Msg("; "), [Msg("stopped early, the scored samples are kept"), Msg("saved to {path}", path="s.json")])
    assert str(both) == "stopped early, the scored samples are kept; saved to s.json"
    assert localize(both, "zh") == "已提前停止，已评分的样本都保留；已保存到 s.json"
    assert str(join(", ", [])) == "" and str(join(", ", ["a"])) == "a"


@pytest.mark.parametrize(
    "flatten",
    [
        lambda m: f"{m}",
        lambda m: f"x {m:>10}",
        lambda m: m + "!",
        lambda m: "!" + m,
        lambda m: f"{m}",
        lambda m: "; ".join([m]),
    ],
)
def test_a_msg_is_not_a_str_so_no_language_is_dropped_on_the_way(flatten):
    with pytest.raises(TypeError) as err:
        flatten(Msg("empty answer"))
    assert "Msg" in str(err.value) or "str" in str(err.value)


def test_formatting_a_msg_says_how_to_compose_instead():
    with pytest.raises(TypeError, match=r"compose it with Msg\("):
        f"{Msg('empty answer')}"
    assert "%s" % Msg("empty answer") == "empty answer"  # noqa: UP031  (logs use %-formatting with str(msg))


def test_equal_by_template_and_values():
    a, b = Msg("message {i} is not an object", i=1), Msg("message {i} is not an object", i=1)
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != Msg("message {i} is not an object", i=2) and a != "message 1 is not an object"
    listed = Msg("JSON lacks the key(s) {missing}", missing=["a"])
    assert hash(listed) == hash(Msg("JSON lacks the key(s) {missing}", missing=["a"]))  # unhashable values too


def test_saved_as_a_dict_and_read_back():
    msg = Msg("{path}: {reason}", path=Path("/d/a.png"), reason=Msg("file not found"))
    data = json.loads(json.dumps(msg.to_dict()))
    assert data == {
        "template": "{path}: {reason}",
        "values": {"path": "/d/a.png", "reason": {"template": "file not found", "values": {}}},
    }
    again = Msg.from_dict(data)
    assert str(again) == str(msg) and localize(again, "zh") == localize(msg, "zh") == "/d/a.png：文件不存在"
    err = ConfigError("{path}: file not found.", path="a")
    assert Msg.from_dict(Msg("Evaluation stopped: {reason}.", reason=err).to_dict()).values["reason"] == err.msg


def test_saved_fields_keep_the_english_for_people_and_the_msg_for_every_language():
    record = saved_fields("reason", Msg("refused: {text}", text="no"))
    assert record["reason"] == "refused: no" and not any(k.endswith("_zh") for k in record)
    assert localize(read_saved(json.loads(json.dumps(record)), "reason"), "zh") == "拒绝回答：no"
    older = {"reason": "refused: no", "reason_zh": "拒绝回答：no"}  # written before the catalogs
    assert read_saved(older, "reason") == "refused: no" and read_saved({}, "reason") == ""
    assert saved_fields("reason", None) == {"reason": None} and saved_fields("reason", "plain") == {"reason": "plain"}


def test_msg_of_keeps_what_an_error_says():
    err = ConfigError("{path}: file not found.", path="a")
    assert msg_of(err) is err.msg and msg_of(Msg("x")) == Msg("x") and msg_of(ValueError("bad")) == "bad"


def test_an_error_takes_a_template_and_refuses_the_old_chinese_argument():
    err = ConfigError("Unknown provider '{provider}'{hint}.", provider="x", hint=Msg(""))
    assert str(err) == "Unknown provider 'x'." and err.msg.values["provider"] == "x"
    with pytest.raises(TypeError, match="zh.json"):
        ConfigError("Only English.", zh="只有中文。")


def test_errors_keep_their_message_and_fields_across_a_process_boundary():
    for original in (
        BadImageError("a.png", Msg("empty file (0 bytes)")),
        EndpointError("http_500", Msg("cannot reach {url} ({tries} tries)", url="u", tries=2), 1),
    ):
        copy = pickle.loads(pickle.dumps(original))
        assert type(copy) is type(original) and copy.msg == original.msg and copy.reason == original.reason
        assert localize(copy, "zh") == localize(original, "zh") != str(original)


def test_a_language_is_one_catalog_file(tmp_path, monkeypatch):
    assert LANGS == ("en", "zh")
    (tmp_path / "zh.json").write_text("{}", encoding="utf-8")
    (tmp_path / "ja.json").write_text(
        json.dumps({"empty answer": "空の回答", "{path}: {reason}": "{path}：{reason}"}), encoding="utf-8"
    )
    assert find_langs(str(tmp_path)) == ("en", "ja", "zh")
    monkeypatch.setattr(text, "LOCALES", str(tmp_path))
    text.catalog.cache_clear()
    try:
        assert localize(BadImageError("a.png", Msg("empty answer")), "ja") == "a.png：空の回答"
    finally:
        text.catalog.cache_clear()


def test_a_catalog_entry_that_does_not_fit_falls_back_to_english(monkeypatch):
    monkeypatch.setattr(text, "catalog", lambda lang: {"Started {name}.": "已开始训练 {other}。"})
    assert localize(Msg("Started {name}.", name="r"), "zh") == "Started r."
    assert isinstance(LabError("x"), Exception)
