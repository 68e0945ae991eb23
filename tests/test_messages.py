"""Every sentence a person can be shown exists in English and Chinese.

Sentences are English templates where they are made (``Msg("...")``, ``ConfigError("...")``,
``t("...")``, a setting's ``label="..."``) and ``lab/locales/zh.json`` holds their Chinese.
These tests read the source, so a new sentence without its Chinese, a Chinese that drops a
value, or a catalog entry nothing uses any more fails here, not in front of a Chinese class.
"""

from __future__ import annotations

import ast
import json
import pickle
import re
import string
from pathlib import Path

import pytest

from lab.errors import BadImageError, BusyError, ConfigError, LabError, cli_lang, localize
from lab.text import Msg

LAB = Path(__file__).resolve().parents[1] / "lab"
CATALOG = json.loads((LAB / "locales" / "zh.json").read_text(encoding="utf-8"))
CJK = re.compile(r"[\u3000-\u303f\u4e00-\u9fff\uff00-\uffef]")  # Chinese characters and punctuation
DYNAMIC = re.compile(r"# dynamic template: \S")  # a known exception, with its reason
# Chinese that is the English on purpose: names of methods, settings and tools.
SAME_IN_CHINESE = {
    "DeepSpeed",
    "DoRA",
    "LoRA alpha",
    "LoRA dropout",
    "Top-p",
    "rsLoRA",
    "vLLM --max-model-len",
}


def _sources():
    for path in sorted(LAB.rglob("*.py")):
        yield path, path.read_text(encoding="utf-8"), ast.parse(path.read_text(encoding="utf-8"))


def _message_errors() -> set[str]:
    """LabError and its kinds that take LabError's arguments (a template and its values)."""
    classes = {}
    for _, _, tree in _sources():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                own_init = any(isinstance(s, ast.FunctionDef) and s.name == "__init__" for s in node.body)
                classes[node.name] = ({getattr(b, "id", getattr(b, "attr", "")) for b in node.bases}, own_init)
    found, grown = {"LabError"}, True
    while grown:
        grown = False
        for name, (bases, own_init) in classes.items():
            if name not in found and bases & found and not own_init:
                found.add(name)
                grown = True
    return found


def _literal(node: ast.AST) -> str | None:
    """A string literal ("..." "..." and "..." + "..." included); None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        parts = [_literal(node.left), _literal(node.right)]
        return None if None in parts else "".join(parts)
    return None


def _is_label(call: ast.Call) -> bool:
    func = call.func
    return (isinstance(func, ast.Name) and func.id == "t") or (
        isinstance(func, ast.Attribute) and func.attr == "t" and getattr(func.value, "id", None) == "i18n"
    )


def _setting_label(call: ast.Call) -> ast.expr | None:
    """The ``label=`` of a ``setting(...)`` field (lab.settings): a label like ``t(...)``'s."""
    func = call.func
    if (func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)) != "setting":
        return None
    return next((k.value for k in call.keywords if k.arg == "label"), None)


def _sites():
    """(where, kind, catalog key or None, marked dynamic) for every Msg, error and label in lab/."""
    errors = _message_errors()
    for path, text, tree in _sources():
        lines = text.splitlines()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = func.id if isinstance(func, ast.Name) else None
            english = node.args[0] if node.args else None
            if english is not None and (name == "Msg" or name in errors):
                kind = "message"
            elif english is not None and _is_label(node):
                kind = "label"
            elif _setting_label(node) is not None:
                kind, english = "label", _setting_label(node)
            else:
                continue
            where = f"{path.relative_to(LAB.parent)}:{node.lineno}"
            marked = any(DYNAMIC.search(line) for line in lines[node.lineno - 1 : node.end_lineno])
            key = _literal(english)
            context = next((_literal(k.value) for k in node.keywords if k.arg == "context"), None)
            if key is not None and context is not None:
                key = f"{context}\x04{key}"
            yield where, kind, key, marked


def _fields(template: str) -> set[str]:
    return {re.split(r"[.\[]", f)[0] for _, f, _, _ in string.Formatter().parse(template) if f is not None}


def _needs_words(template: str) -> bool:
    """A template with words outside its placeholders (one of only values and signs needs no entry)."""
    return bool(re.search(r"[A-Za-z]", re.sub(r"\{[^{}]*\}", "", template)))


def test_every_sentence_has_its_chinese_with_the_same_values():
    faults = []
    for where, kind, key, _ in _sites():
        if key is None or not key:
            continue
        if key not in CATALOG:
            if _needs_words(key):
                faults.append(f"{where}: no Chinese in lab/locales/zh.json for {key!r}")
            continue
        if kind == "message" and _fields(key) != _fields(CATALOG[key]):
            faults.append(
                f"{where}: the Chinese of {key!r} has the values {sorted(_fields(CATALOG[key]))}, "
                f"the English {sorted(_fields(key))}"
            )
    assert not faults, "\n".join(faults)


def test_templates_are_literals_unless_marked():
    # A template made at run time cannot be checked here, nor found in the catalog.
    dynamic = [where for where, _, key, marked in _sites() if key is None and not marked]
    assert not dynamic, f"templates that are not literals (mark a known case '# dynamic template: why'): {dynamic}"


def test_labels_have_no_braces():
    # Gradio finds a label's key in the page by the first '}' after it.
    braces = [
        f"{where}: {key!r}"
        for where, kind, key, _ in _sites()
        if kind == "label" and key and ("{" in key or "}" in key)
    ]
    assert not braces, braces


def test_every_catalog_entry_is_used():
    from lab.ui.i18n import GRADIO_WORDS

    used = {key for _, _, key, _ in _sites() if key} | set(GRADIO_WORDS)
    unused = sorted(set(CATALOG) - used)
    assert not unused, f"entries of lab/locales/zh.json that no code uses: {unused}"


def test_chinese_is_chinese():
    faults = [
        f"{en!r}: {zh!r}"
        for en, zh in CATALOG.items()
        if not CJK.search(zh) and not (en in SAME_IN_CHINESE and zh == en)
    ]
    assert not faults, "entries without Chinese (names that stay English go into SAME_IN_CHINESE):\n" + "\n".join(
        faults
    )
    assert SAME_IN_CHINESE <= set(CATALOG), SAME_IN_CHINESE - set(CATALOG)


def test_the_catalog_file_is_sorted_and_stable():
    text = (LAB / "locales" / "zh.json").read_text(encoding="utf-8")
    assert text == json.dumps(dict(sorted(CATALOG.items())), ensure_ascii=False, indent=1) + "\n"


def test_ui_shows_errors_in_the_page_language():
    # str(err) is the English sentence; the tabs must show localize(err, lang).
    offenders = [
        f"{p.name}:{i}"
        for p in (LAB / "ui").glob("*.py")
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if "str(err)" in line
    ]
    assert not offenders, offenders


def test_localize_picks_the_language_and_falls_back_to_english():
    err = BusyError("The model is busy: {busy}; try again when it is done.", busy=Msg("a model is being loaded"))
    assert localize(err, "zh") == "模型正忙：正在加载模型；请等它结束后再试。"
    assert localize(err, "en") == str(err) == "The model is busy: a model is being loaded; try again when it is done."
    assert localize(ConfigError("Only English {x}.", x=1), "zh") == "Only English 1."  # not in the catalog
    assert localize("plain", "zh") == "plain" and localize(Msg("no assistant answer"), "xx") == "no assistant answer"
    image = BadImageError("/x/a.png", Msg("file not found"))
    assert str(image) == "/x/a.png: file not found" and localize(image, "zh") == "/x/a.png：文件不存在"


def test_every_language_survives_a_process_boundary():
    # Training workers send their errors back through pickling.
    for original in (
        ConfigError("{path}: file not found.", path="a.yaml"),
        BadImageError("a.png", Msg("empty file (0 bytes)")),
        Msg("message {i} is not an object", i=3),
    ):
        copy = pickle.loads(pickle.dumps(original))
        assert type(copy) is type(original) and str(copy) == str(original)
        assert localize(copy, "zh") == localize(original, "zh") != str(original)
    assert isinstance(pickle.loads(pickle.dumps(ConfigError("x"))), LabError)


@pytest.mark.parametrize(
    ("env", "lang"),
    [
        ({"LAB_LANG": "zh"}, "zh"),
        ({"LAB_LANG": "en", "LANG": "zh_CN.UTF-8"}, "en"),
        ({"LANG": "zh_CN.UTF-8"}, "zh"),
        ({"LC_ALL": "en_US.UTF-8", "LANG": "zh_CN.UTF-8"}, "en"),
        ({}, "en"),
        ({"LANG": "fr_FR.UTF-8"}, "en"),
    ],
)
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
