"""Every sentence a person can be shown exists in English and Chinese.

Core errors carry their Chinese form where they are raised (``zh=``), messages that are not
errors are :class:`lab.errors.Text`; these tests read the source so that a new raise site
without a Chinese sentence fails here, not in front of a Chinese class.
"""

from __future__ import annotations

import ast
import pickle
import re
from pathlib import Path

import pytest

from lab.errors import BadImageError, BusyError, ConfigError, LabError, Text, cli_lang, localize

LAB = Path(__file__).resolve().parents[1] / "lab"
ERRORS = {"LabError", "ConfigError", "ModelLoadError", "DatasetError", "BusyError"}
CJK = re.compile(r"[\u4e00-\u9fff]")


def _sources():
    for path in sorted(LAB.rglob("*.py")):
        if path.name != "errors.py":
            yield path, ast.parse(path.read_text(encoding="utf-8"))


def _called_name(call: ast.Call) -> str | None:
    func = call.func
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else None


def _literal_text(node: ast.AST) -> str | None:
    """The literal parts of a string or f-string; None for any other expression."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value for v in node.values if isinstance(v, ast.Constant))
    if isinstance(node, ast.BinOp):  # "..." + "..."
        parts = [_literal_text(node.left), _literal_text(node.right)]
        return None if None in parts else "".join(parts)
    return None


def _names(node: ast.AST) -> set[str]:
    """Variables interpolated into an f-string (or used in any expression)."""
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _pairs():
    """(where, english node, chinese node or None) for every bilingual message in lab/."""
    for path, tree in _sources():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            name, where = _called_name(node), f"{path.relative_to(LAB.parent)}:{node.lineno}"
            keywords = {k.arg: k.value for k in node.keywords}
            if name in ERRORS and node.args:
                yield where, node.args[0], keywords.get("zh", node.args[1] if len(node.args) > 1 else None)
            elif name == "BadImageError" and len(node.args) >= 2:
                yield where, node.args[1], keywords.get("reason_zh", node.args[2] if len(node.args) > 2 else None)
            elif name == "Text" and node.args:
                yield where, node.args[0], keywords.get("zh", node.args[1] if len(node.args) > 1 else None)


def test_every_error_and_message_has_a_chinese_sentence():
    missing = [where for where, _en, zh in _pairs() if zh is None]
    assert not missing, f"{len(missing)} messages have no Chinese form (zh=...): {missing}"


def test_chinese_sentences_are_chinese_and_keep_the_values():
    faults = []
    for where, en, zh in _pairs():
        if zh is None:
            continue
        literal = _literal_text(zh)
        if literal is not None and literal.strip() and not CJK.search(literal):
            faults.append(f"{where}: the Chinese form has no Chinese")
        lost = _names(en) - _names(zh)
        if lost:
            faults.append(f"{where}: the Chinese form drops {sorted(lost)}")
    assert not faults, "\n".join(faults)


def test_ui_shows_errors_in_the_page_language():
    # str(err) is the English sentence; the tabs must show localize(err, lang).
    offenders = [f"{p.name}:{i}" for p in (LAB / "ui").glob("*.py")
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if "str(err)" in line]
    assert not offenders, offenders


def test_localize_picks_the_language_and_falls_back_to_english():
    err = BusyError("The model is busy.", zh="模型正忙。")
    assert localize(err, "zh") == "模型正忙。" and localize(err, "en") == str(err) == "The model is busy."
    assert localize(ConfigError("Only English."), "zh") == "Only English."
    message = Text("3 records", "3 条样本")
    assert message == "3 records" and localize(message, "zh") == "3 条样本" and localize("plain", "zh") == "plain"
    kept = Text.of(err)  # an error's sentence, kept after the error is gone
    assert kept == "The model is busy." and kept.zh == "模型正忙。" and Text.of("plain").zh == "plain"
    image = BadImageError("/x/a.png", "file not found", "文件不存在")
    assert str(image) == "/x/a.png: file not found" and localize(image, "zh") == "/x/a.png：文件不存在"


def test_both_languages_survive_a_process_boundary():
    # Training workers send their errors back through pickling.
    for original in (ConfigError("bad", zh="坏"), BadImageError("a.png", "empty", "空文件"), Text("hi", "你好")):
        copy = pickle.loads(pickle.dumps(original))
        assert type(copy) is type(original) and str(copy) == str(original)
        assert localize(copy, "zh") == localize(original, "zh")
    assert isinstance(pickle.loads(pickle.dumps(ConfigError("x"))), LabError)


@pytest.mark.parametrize(("env", "lang"), [
    ({"LAB_LANG": "zh"}, "zh"), ({"LAB_LANG": "en", "LANG": "zh_CN.UTF-8"}, "en"),
    ({"LANG": "zh_CN.UTF-8"}, "zh"), ({"LC_ALL": "en_US.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"), ({}, "en"),
])
def test_cli_language_follows_lab_lang_then_the_locale(monkeypatch, env, lang):
    for name in ("LAB_LANG", "LC_ALL", "LC_MESSAGES", "LANG"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert cli_lang() == lang


def test_cli_prints_errors_in_chinese_under_a_chinese_locale(monkeypatch, capsys):
    from lab.cli import main

    monkeypatch.setenv("LAB_LANG", "zh")
    assert main(["data", "check", "/no/such/dataset"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("错误: ") and CJK.search(err.removeprefix("错误: ")), err
