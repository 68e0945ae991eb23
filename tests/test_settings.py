"""Every group of settings is declared once: labels, defaults, bounds and choices come from the fields.

The forms of the app, the flags of the CLI and the checks are made from the same fields, so
these tests hold the three together: a field without a label in both languages, a form or a
flag whose default is not the dataclass's, a bound that is not refused with one sentence, or
a handler that reads values by position fails here.
"""

from __future__ import annotations

import argparse
import ast
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from lab.chat import ChatSettings
from lab.errors import ConfigError, localize
from lab.evaluation.endpoint import EndpointConfig
from lab.evaluation.runner import EvalSettings
from lab.export import ExportSettings
from lab.hubs import SourceSettings
from lab.labeling.client import LabelerConfig
from lab.settings import (
    add_flags,
    build,
    check,
    defaults,
    flag_values,
    from_flags,
    public_dict,
    setting,
    setting_of,
    settings_of,
    values,
)
from lab.text import Msg, catalog
from lab.train_config import TrainConfig, list_train_presets

LAB = Path(__file__).resolve().parents[1] / "lab"
GROUPS = [TrainConfig, LabelerConfig, EndpointConfig, EvalSettings, ChatSettings, ExportSettings, SourceSettings]
CJK = re.compile(r"[\u4e00-\u9fff]")


def unlabeled(cls) -> list[str]:
    """Fields of ``cls`` without a label in English and in Chinese (its catalog entry)."""
    chinese = catalog("zh")
    return [
        s.name
        for s in settings_of(cls)
        if not s.label.strip() or not chinese.get(s.label if s.context is None else f"{s.context}\x04{s.label}")
    ]


def changed_value(s):
    """A valid value of setting ``s`` that is not its default."""
    if s.base_type == "bool":
        return not s.default
    listed = s.choices or s.options
    if listed:
        return next(c for c in listed if c != s.default and c is not None)
    if s.base_type in ("int", "float"):
        low = s.min if s.min is not None else s.above if s.above is not None else 0
        value = (low + s.max) / 2 if s.max is not None else low + 3
        value = int(value) if s.base_type == "int" else float(value)
        return value if value != s.default else value + (1 if s.max is None else 0)
    return f"x-{s.name}"


# ---------------------------------------------------------------- labels


def test_every_settings_class_is_a_known_group():
    """A new ``...Config`` / ``...Settings`` dataclass in the core must join GROUPS, and so these tests."""
    found = set()
    for path in LAB.rglob("*.py"):
        if path.relative_to(LAB).parts[0] in ("ui", "cli"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            decorated = isinstance(node, ast.ClassDef) and any(
                getattr(d, "id", getattr(d, "attr", None)) == "dataclass" for d in node.decorator_list
            )
            if decorated and node.name.endswith(("Config", "Settings")):
                found.add(node.name)
    assert found == {cls.__name__ for cls in GROUPS}


@pytest.mark.parametrize("cls", GROUPS, ids=lambda cls: cls.__name__)
def test_every_field_has_a_label_in_both_languages_and_help(cls):
    assert unlabeled(cls) == []
    assert [s.name for s in settings_of(cls) if not s.help.strip()] == []


def test_a_field_without_a_label_is_found():
    @dataclass
    class Careless:
        labeled: int = setting(1, label="Learning rate")
        """Has both: its Chinese is in the catalog."""
        plain: int = 2
        half: int = setting(3, label="A label nobody translated")

    assert unlabeled(Careless) == ["plain", "half"]


def test_a_label_is_english_and_its_chinese_is_in_the_catalog():
    with pytest.raises(TypeError, match="English label only"):
        setting(1, label=("Learning rate", "学习率"))
    assert setting_of(TrainConfig, "learning_rate").label == "Learning rate" == localize(Msg("Learning rate"))
    assert localize(Msg("Learning rate"), "zh") == "学习率"
    labeler, endpoint = setting_of(LabelerConfig, "base_url"), setting_of(EndpointConfig, "base_url")
    assert labeler.label == endpoint.label == "Base URL" and endpoint.context == "endpoint"  # two translations
    assert catalog("zh")["Base URL"] == "接口地址（Base URL）" and catalog("zh")["endpoint\x04Base URL"] == "接口地址"
    parts = setting_of(TrainConfig, "lora_targets").choice_labels
    assert localize(parts["vision"], "zh") == "视觉编码器"


def test_help_is_the_docstring_under_the_field():
    assert setting_of(EvalSettings, "top_p").help == "Nucleus sampling threshold when sampling."
    assert setting_of(TrainConfig, "overlong").help.endswith("would cut its answer or its image tokens.")
    parser = argparse.ArgumentParser()
    add_flags(parser, TrainConfig)
    assert "30% more time" in parser.format_help()  # a % in a docstring does not break argparse


# ---------------------------------------------------------------- defaults: dataclass, form, flags


def _app_widgets(monkeypatch) -> dict[str, list]:
    """``{"Class.field": [widget values]}`` of the settings widgets in the whole app (not launched)."""
    from lab.ui import build_app, forms
    from lab.ui.context import AppSettings, UIContext

    made, add = [], forms.Form.add

    def recorded(form, name, **options):
        component = add(form, name, **options)
        made.append((f"{form.cls.__name__}.{name}", component))
        return component

    monkeypatch.setattr(forms.Form, "add", recorded)
    build_app(UIContext(AppSettings(model="")))
    widgets: dict[str, list] = {}
    for key, component in made:
        widgets.setdefault(key, []).append(component.value)
    return widgets


def test_the_apps_forms_show_the_dataclass_defaults(monkeypatch):
    from lab.ui.forms import to_widget
    from lab.ui.prompt_tab import labeler_start
    from lab.ui.train_tab import default_preset

    widgets = _app_widgets(monkeypatch)
    start = {cls: defaults(cls) for cls in GROUPS}
    start[LabelerConfig] = values(labeler_start())  # the first provider preset is picked for the person
    start[TrainConfig] = values(TrainConfig.from_preset(default_preset()))  # so is a training preset
    changed = {name for name, value in start[LabelerConfig].items() if value != defaults(LabelerConfig)[name]}
    assert changed <= {"provider", "base_url", "model"}
    checked = set()
    for cls in GROUPS:
        for s in settings_of(cls):
            for shown in widgets.get(f"{cls.__name__}.{s.name}", []):
                assert shown == to_widget(s, start[cls][s.name]), (cls.__name__, s.name, shown)
                checked.add((cls, s.name))
    # Where a model comes from is the header's checkbox and the Train form's own fields, not a form of its own.
    assert {cls for cls, _ in checked} == set(GROUPS) - {SourceSettings}
    assert {name for cls, name in checked if cls is EvalSettings} == {
        "compare_base",
        "batch_size",
        "max_new_tokens",
        "limit",
    }
    assert widgets["EvalSettings.max_new_tokens"] == [256]  # the one answer length (the tab said 128)
    assert all((ExportSettings, s.name) in checked for s in settings_of(ExportSettings))


def _command(name: str):
    from lab.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices[name]


COMMANDS = {
    "label": (["--out", "x"], [LabelerConfig, SourceSettings]),
    "eval": ([], [EvalSettings, EndpointConfig, SourceSettings]),
    "chat": (["--prompt", "hi"], [ChatSettings, SourceSettings]),
    "export": (["--adapter", "run", "--out", "o"], [ExportSettings, SourceSettings]),
    "train": (["--preset", "lora"], [SourceSettings]),
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_flags_show_and_keep_the_dataclass_defaults(command):
    from lab.settings import _shown_default

    required, classes = COMMANDS[command]
    parser, sub = _command(command)
    args = parser.parse_args([command, *required])
    actions = {a.dest: a for a in sub._actions}
    for cls in classes:
        assert flag_values(cls, args) == {}  # nothing given: the dataclass decides, nothing else
        for s in settings_of(cls):
            if not s.has_flag:
                assert s.name not in actions or cls is EndpointConfig, s.name  # --model, --endpoint are the CLI's own
                continue
            action = actions[s.name]
            shown = _shown_default(s.default)
            assert not shown or f"(default: {shown})" in action.help, (s.name, action.help)
            if cls is EndpointConfig and s.name in ("max_new_tokens", "temperature"):  # flags shared with EvalSettings
                assert s.default == setting_of(EvalSettings, s.name).default
    if EndpointConfig not in classes:
        for cls in classes:
            assert values(from_flags(cls, args)) == values(cls())


def test_given_flags_win_over_saved_settings():
    parser, _ = _command("label")
    args = parser.parse_args(
        ["label", "--out", "x", "--max-new-tokens", "7", "--no-json-mode", "--image-format", "png"]
    )
    config = from_flags(LabelerConfig, args, base={"max_new_tokens": 99, "json_mode": True, "concurrency": 3})
    assert (config.max_new_tokens, config.json_mode, config.image_format, config.concurrency) == (7, False, "png", 3)
    old = parser.parse_args(["label", "--out", "x", "--max-tokens", "8"])  # the flag's old name
    assert from_flags(LabelerConfig, old).max_new_tokens == 8
    with pytest.raises(SystemExit):
        parser.parse_args(["label", "--out", "x", "--image-format", "gif"])
    with pytest.raises(SystemExit):  # no flag carries an API key into shell history
        parser.parse_args(["label", "--out", "x", "--api-key", "sk-x"])


# ---------------------------------------------------------------- bounds and choices


@dataclass
class Knobs:
    count: int = setting(1, label="Count", min=1)
    """At least one."""
    size: int = setting(0, label="Size", min=0)
    """Not negative."""
    share: float = setting(0.5, label="Share", min=0, below=1)
    """In [0, 1)."""
    rate: float = setting(1.0, label="Rate", above=0)
    """Above 0."""
    level: float = setting(1.0, label="Level", above=0, max=2)
    """In (0, 2]."""
    mode: str | None = setting("a", label="Mode", choices=("a", "b", None))
    """a, b or none."""
    parts: list[str] = setting(["vision"], label="Parts", choices=("vision", "language"))
    """Any of vision, language."""
    note: str | None = setting(None, label="Note")
    """Free text."""

    def __post_init__(self):
        check(self)


@pytest.mark.parametrize(
    ("changes", "en", "zh"),
    [
        ({"count": 0}, "count must be at least 1, not 0.", "count 至少为 1，而不是 0。"),
        ({"size": -2}, "size cannot be negative, not -2.", "size 不能为负数，而不是 -2。"),
        ({"share": 1}, "share must be at least 0 and below 1, not 1.0.", "share 必须大于等于 0 且小于 1，而不是 1.0。"),
        ({"rate": 0}, "rate must be greater than 0, not 0.0.", "rate 必须大于 0，而不是 0.0。"),
        (
            {"level": 2.5},
            "level must be greater than 0 and at most 2, not 2.5.",
            "level 必须大于 0 且小于等于 2，而不是 2.5。",
        ),
        ({"mode": "c"}, "mode must be one of a, b, null, not 'c'.", "mode 必须是 a, b, null 之一，而不是 'c'。"),
        (
            {"parts": ["vison"]},
            "parts has 'vison' (did you mean 'vision'?); the choices are vision, language.",
            "parts 中的 'vison' 不是可选值（是不是 'vision'？）；可选：vision, language。",
        ),
        ({"count": "many"}, "count must be a number, not 'many'.", "count 必须是数字，而不是 'many'。"),
    ],
)
def test_bounds_and_choices_are_refused_in_one_sentence(changes, en, zh):
    with pytest.raises(ConfigError) as err:
        Knobs(**changes)
    assert str(err.value) == en and localize(err.value, "zh") == zh


def test_values_in_bounds_are_kept_and_typed():
    knobs = Knobs(count="3", share=0, level=2, mode=None, parts="vision, language", note="")
    assert (knobs.count, knobs.share, knobs.level, knobs.mode, knobs.parts, knobs.note) == (
        3,
        0.0,
        2.0,
        None,
        ["vision", "language"],
        None,
    )


@pytest.mark.parametrize(
    ("cls", "changes", "message"),
    [
        (LabelerConfig, {"temperature": 3}, "temperature must be at least 0 and at most 2, not 3.0."),
        (LabelerConfig, {"image_format": "gif"}, "image_format must be one of jpeg, png, not 'gif'."),
        (LabelerConfig, {"timeout": 0}, "timeout must be greater than 0, not 0.0."),
        (EndpointConfig, {"concurrency": 0, "model": "m"}, "concurrency must be at least 1, not 0."),
        (EvalSettings, {"top_p": 0}, "top_p must be greater than 0 and at most 1, not 0.0."),
        (EvalSettings, {"limit": -1}, "limit cannot be negative, not -1."),
        (ChatSettings, {"max_new_tokens": 0}, "max_new_tokens must be at least 1, not 0."),
        (
            ExportSettings,
            {"gpu_memory_utilization": 1.5},
            "gpu_memory_utilization must be greater than 0 and at most 1, not 1.5.",
        ),
        (ExportSettings, {"max_model_len": 100}, "max_model_len must be at least 256, not 100."),
        (TrainConfig, {"lora_targets": ["language", "visoin"]}, "lora_targets has 'visoin' (did you mean 'vision'?)"),
    ],
)
def test_every_group_refuses_out_of_bounds_values(cls, changes, message):
    with pytest.raises(ConfigError) as err:
        build(cls, changes)
    text, zh = str(err.value), localize(err.value, "zh")
    assert text.startswith(message) and "\n" not in text and text.endswith(".")
    assert CJK.search(zh) and "\n" not in zh and zh.endswith("。")


def test_a_bad_flag_value_is_one_sentence_before_any_model_loads(capsys):
    from lab.cli import main

    assert main(["chat", "--prompt", "hi", "--model", "no/such-model", "--top-p", "0"]) == 2
    assert capsys.readouterr().err == "error: top_p must be greater than 0 and at most 1, not 0.0.\n"


def test_unknown_names_are_refused_with_the_closest_and_old_names_are_read():
    with pytest.raises(ConfigError, match=r"unknown key 'temprature' in ChatSettings \(did you mean 'temperature'\?\)"):
        build(ChatSettings, {"temprature": 1})
    assert build(LabelerConfig, {"max_tokens": 77}).max_new_tokens == 77  # label_job.json of earlier versions
    assert build(EndpointConfig, {"max_tokens": 5, "model": "m"}).max_new_tokens == 5
    assert build(LabelerConfig, {"max_tokens": 1, "max_new_tokens": 2}).max_new_tokens == 2


def test_secrets_stay_out_of_saved_settings_and_repr():
    config = LabelerConfig(api_key="sk-secret-1")
    assert "api_key" not in public_dict(config) and "sk-secret-1" not in repr(config)
    assert "token" not in public_dict(ExportSettings(token="hf_x")) and "hf_x" not in repr(ExportSettings(token="hf_x"))
    assert "api_key" not in EndpointConfig(model="m", api_key="k").public_dict()


# ---------------------------------------------------------------- forms read by name


@pytest.mark.parametrize(
    "cls", [LabelerConfig, EvalSettings, ChatSettings, ExportSettings], ids=lambda cls: cls.__name__
)
def test_a_form_is_read_by_name_whatever_the_order_of_its_widgets(cls):
    import gradio as gr

    from lab.ui.forms import Form, to_widget

    wanted = {s.name: changed_value(s) for s in settings_of(cls)}
    assert all(wanted[name] != value for name, value in defaults(cls).items())
    names = list(wanted)
    random.Random(len(names)).shuffle(names)
    with gr.Blocks():
        form = Form(cls)
        for name in names:
            form.add(name)
    assert list(form.named()) == names
    shown = [to_widget(form.fields[name], wanted[name]) for name in names]
    assert values(form.read(shown)) == wanted  # a list in the form's own order
    by_name = dict(zip(names, shown))
    assert values(form.read(dict(reversed(list(by_name.items()))))) == wanted  # a mapping in any order
    assert values(form.read({**by_name, "sort": "gain"})) == wanted  # other inputs of the handler are ignored


@pytest.mark.parametrize("preset", list_train_presets())
def test_the_train_form_gives_back_every_preset(preset):
    from lab.ui.train_tab import FORM_FIELDS, config_from_form, form_values

    cfg = TrainConfig.from_preset(preset)
    assert config_from_form(dict(zip(FORM_FIELDS, form_values(cfg)))) == cfg


def test_the_app_takes_the_labeler_settings_by_name(launch_app, tmp_path):
    from labeling_images import many

    from lab.ui.prompt_tab import LABELER_INPUTS

    app, ctx, client = launch_app(model="")
    params = [
        p["parameter_name"]
        for p in client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/label_estimate"][
            "parameters"
        ]
    ]
    assert params[5:] == list(LABELER_INPUTS)  # after folder, out, preset, language and limit
    many(tmp_path / "pics", 2)
    job = dict(zip(params[:5], [str(tmp_path / "pics"), "named", "sample_caption", "en", 0]))
    labeler = {
        "provider": "",
        "base_url": "http://127.0.0.1:9/v1",
        "model": "fake-vl",
        "api_key": "",
        "temperature": 0.0,
        "max_new_tokens": 64,
        "max_pixels": 200 * 200,
        "json_mode": False,
        "reask": False,
        "concurrency": 2,
        "max_retries": 0,
        "timeout": 5,
    }
    positional = client.predict(*job.values(), *[labeler[name] for name in LABELER_INPUTS], api_name="/label_estimate")
    shuffled = dict(reversed(list({**job, **labeler}.items())))
    assert client.predict(**shuffled, api_name="/label_estimate") == positional
    smaller = client.predict(**{**shuffled, "max_pixels": 28 * 28}, api_name="/label_estimate")
    assert smaller != positional  # the pixel budget reached the estimate by its name (48x32 images shrink)


def test_a_saved_job_with_the_old_answer_length_name_is_resumed(tmp_path, monkeypatch):
    from fake_openai import FakeOpenAI
    from labeling_images import many

    from lab.cli import main

    many(tmp_path / "pics", 2)
    out = tmp_path / "ds"
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with FakeOpenAI() as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        assert (
            main(
                [
                    "label",
                    "--images",
                    str(tmp_path / "pics"),
                    "--prompt",
                    "sample_caption",
                    "--out",
                    str(out),
                    "--model",
                    "fake-vl",
                    "--max-tokens",
                    "55",
                    "--limit",
                    "1",
                ]
            )
            == 0
        )
        job_file = out / "label_job.json"
        job = json.loads(job_file.read_text(encoding="utf-8"))
        assert job["labeler"]["max_new_tokens"] == 55
        job["labeler"]["max_tokens"] = 66  # as label_job.json was written before the rename
        del job["labeler"]["max_new_tokens"]
        job_file.write_text(json.dumps(job), encoding="utf-8")
        assert main(["label", "--out", str(out)]) == 0
        assert [r["body"]["max_tokens"] for r in server.requests] == [55, 66]
