"""Prompt presets, training presets and TrainConfig: every bundled YAML loads, bad ones are refused."""

from __future__ import annotations

import re

import pytest
import yaml

from lab.config_values import format_override
from lab.errors import ConfigError, localize
from lab.paths import PRESETS_DIR
from lab.presets import (
    PromptPreset,
    PromptText,
    list_prompt_presets,
    load_prompt_preset,
    prompt_sha,
    save_prompt_preset,
    with_image_placeholder,
)
from lab.train_config import TrainConfig, list_train_presets
from lab.yaml_files import load_yaml_strict

CJK = re.compile(r"[\u4e00-\u9fff]")
PROMPT_FILES = sorted((PRESETS_DIR / "prompts").glob("*.yaml"))
TRAIN_FILES = sorted((PRESETS_DIR / "train").glob("*.yaml"))


# --- prompt presets


@pytest.mark.parametrize("path", PROMPT_FILES, ids=lambda p: p.stem)
def test_every_prompt_preset_loads(path):
    preset = load_prompt_preset(path.stem)
    assert preset.name == path.stem
    assert preset.langs == ["en", "zh"]
    assert set(preset.title) == {"en", "zh"} and set(preset.description) == {"en", "zh"}
    for lang in ("zh", "en"):
        system, user, keys = preset.prompt(lang)
        assert user.strip()
        assert bool(keys) == preset.json
    assert load_prompt_preset(path).to_dict() == preset.to_dict()


def test_bundled_presets_are_the_expected_set():
    expected = {"ui_function_json", "image_description", "ecommerce_classify", "museum_guide", "sample_caption"}
    assert expected <= set(list_prompt_presets())
    assert len(PROMPT_FILES) >= 5 and len(TRAIN_FILES) >= 7


def test_seed_prompts_are_kept_word_for_word():
    museum = load_prompt_preset("museum_guide")
    assert museum.prompt("zh")[:2] == ("你是一个导游，请生动有趣地回答游客提出的问题", "给我讲讲这个东西<image>")
    ui = load_prompt_preset("ui_function_json")
    _, user, keys = ui.prompt("zh")
    assert user.startswith("帮我分析这个图片里组件传递的功能语义")
    example = yaml.safe_load(user[user.index("{") :])  # the worked example is valid JSON (YAML reads JSON)
    assert set(example) == set(keys) == {"组件名", "功能"}
    _, user_en, keys_en = ui.prompt("en")
    assert set(yaml.safe_load(user_en[user_en.index("{") :])) == set(keys_en) == {"component", "functions"}


def test_unknown_key_in_prompt_preset_names_key_and_file(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\ntitel: {en: x}\nen: {user: hi}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key 'titel' in .*mine\.yaml \(did you mean 'title'\?\)"):
        load_prompt_preset(path)
    path.write_text("name: mine\nen: {user: hi, sytem: be nice}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"'sytem'.*'en' section.*did you mean 'system'"):
        load_prompt_preset(path)


@pytest.mark.parametrize(
    "text, message",
    [
        ("json: true\nen: {user: hi}\n", "lists no expected_keys"),
        ("en: {user: '  '}\n", "empty user prompt"),
        ("title: x\n", "has no prompt"),
        ("en: {user: hi, expected_keys: label}\n", "must be a list"),
        ("json: maybe\nen: {user: hi}\n", "true or false"),
        ("- a\n- b\n", "expected a mapping"),
        ("en: {user: [unclosed\n", "not valid YAML at line"),
    ],
)
def test_bad_prompt_presets_are_refused(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as err:
        load_prompt_preset(path)
    zh = localize(err.value, "zh")
    assert CJK.search(zh) and zh.endswith("。"), zh


def test_nested_places_and_suggestions_are_chinese_on_a_chinese_page(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nen: {user: hi, sytem: be nice}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_prompt_preset(path)
    assert localize(err.value, "zh") == (
        f"{path} 的 'en' 部分：未知的键 'sytem'（是不是 'system'？）；可用的键：system, user, expected_keys。"
    )
    with pytest.raises(ConfigError) as err:
        TrainConfig.from_dict({"learning_rat": 1.0})
    assert localize(err.value, "zh").startswith("训练配置：未知的键 'learning_rat'（是不是 'learning_rate'？）")


def test_unknown_preset_name_suggests_the_closest():
    with pytest.raises(ConfigError, match="did you mean 'museum_guide'"):
        load_prompt_preset("museum_guid")
    with pytest.raises(ConfigError, match="file not found"):
        load_prompt_preset("no/such/file.yaml")


def test_save_list_and_load_a_user_preset(lab_home):
    preset = PromptPreset(
        name="receipts",
        texts={"zh": PromptText("你是记账助手。", "<image>提取金额和日期，\n只返回JSON。", ("金额", "日期"))},
        title={"zh": "小票"},
        json=True,
    )
    path = save_prompt_preset(preset)
    assert path == lab_home / "presets" / "prompts" / "receipts.yaml"
    assert "|" in path.read_text(encoding="utf-8")  # multi-line prompts stay readable blocks
    assert "receipts" in list_prompt_presets()
    loaded = load_prompt_preset("receipts")
    assert loaded.to_dict() == preset.to_dict()
    assert loaded.prompt("en") == ("你是记账助手。", "<image>提取金额和日期，\n只返回JSON。", ["金额", "日期"])
    with pytest.raises(ConfigError, match="unknown language"):
        loaded.prompt("fr")


def test_bundled_names_cannot_be_overwritten(lab_home):
    preset = load_prompt_preset("museum_guide")
    with pytest.raises(ConfigError, match="bundled preset"):
        save_prompt_preset(preset)
    assert not (lab_home / "presets").exists()
    with pytest.raises(ConfigError, match="preset name"):
        PromptPreset(name="../escape", texts={"en": PromptText("", "hi")})


def test_prompt_sha_is_stable_and_sensitive():
    sha = prompt_sha("sys", "user")
    assert sha == prompt_sha("sys\r\n", "user\n") and len(sha) == 16
    # Pinned: labeling results saved on disk are keyed by this value, so it must never drift.
    assert sha == "2316382b7906b165"
    assert sha != prompt_sha("sys", "user!") != prompt_sha("", "sysuser")
    assert prompt_sha("a", "b", "gpt-4o") != prompt_sha("a", "b", "gpt-4o-mini")
    assert prompt_sha("a", "b", {"t": 0, "m": 1}) == prompt_sha("a", "b", {"m": 1, "t": 0})


def test_image_placeholder():
    assert with_image_placeholder("Describe.") == "<image>Describe."
    assert with_image_placeholder("给我讲讲这个东西<image>") == "给我讲讲这个东西<image>"


def test_load_yaml_strict_accepts_empty_file(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("", encoding="utf-8")
    assert load_yaml_strict(path, ["a"]) == {}


# --- training presets and TrainConfig


@pytest.mark.parametrize("path", TRAIN_FILES, ids=lambda p: p.stem)
def test_every_train_preset_loads(path):
    cfg = TrainConfig.from_preset(path.stem)
    assert TrainConfig.from_yaml(path) == cfg
    assert cfg.model == "demo" or "/" in cfg.model


def test_train_presets_say_what_they_promise():
    lora = TrainConfig.from_preset("lora")
    assert (lora.lora_rank, lora.lora_alpha, lora.learning_rate) == (8, 32, 1e-4)
    assert (lora.gradient_accumulation_steps, lora.num_epochs, lora.max_length) == (16, 5, 2048)
    assert (lora.val_ratio, lora.seed, lora.per_device_batch_size) == (0.01, 42, "auto")  # fitted to the GPU
    frozen = TrainConfig.from_preset("lora_freeze_vision")
    assert frozen.lora_targets == ["language"] and not (frozen.train_vision or frozen.train_merger)
    vision = TrainConfig.from_preset("vision_only")
    assert vision.method == "full" and vision.train_vision and not (vision.train_language or vision.train_merger)
    mixed = TrainConfig.from_preset("lora_llm_full_vit")
    assert mixed.lora_targets == ["language"] and mixed.train_vision
    assert TrainConfig.from_preset("qlora").method == "qlora"
    demo = TrainConfig.from_preset("cpu_demo")
    assert demo.model == "demo" and demo.dataset == "data/sample" and demo.logging_steps == 1
    assert set(list_train_presets()) >= {"lora", "qlora", "full", "cpu_demo"}


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["method=full", "train_language=false", "train_merger=false", "train_vision=false"], "trains nothing"),
        (["method=qlora", "train_vision=true", "lora_targets=[language]"], "qlora keeps the base weights"),
        (["method=qlora", "deepspeed=zero3"], "zero3"),
        (["lora_targets=[]"], "needs at least one part in lora_targets"),
        (["train_vision=true"], "either adapters or full training"),
        (["max_steps=-1", "num_epochs=0"], "nothing to train"),
        (["max_steps=0"], "max_steps must be"),
        (["val_ratio=1.0"], "val_ratio must be at least 0 and below 1"),
        (["val_ratio=-0.1"], "val_ratio"),
        (["learning_rate=0"], "learning_rate must be greater than 0"),
        (["per_device_batch_size=0"], "per_device_batch_size must be at least 1"),
        (["method=dpo"], "method must be one of lora, qlora, full"),
        (["lr_scheduler=step"], "lr_scheduler must be one of"),
        (["report_to=mlflow"], "report_to must be one of"),
        (["deepspeed=zero1"], "deepspeed must be one of"),
        (["overlong=truncate"], "overlong must be one of drop, error"),
        (["min_pixels=2000000", "max_pixels=1000000"], "larger than max_pixels"),
        (["method=full", "train_language=true", "loraplus_lr_ratio=16"], "loraplus_lr_ratio applies to LoRA"),
        (["method=full", "train_language=true", "use_dora=true"], "use_dora applies to LoRA"),
        (["loraplus_lr_ratio=-1"], "loraplus_lr_ratio must be greater than 0"),
        (["lora_targets=[language, vison]"], "did you mean 'vision'"),
        (["lora_rank=abc"], "lora_rank must be a number"),
        (["lora_rank=2.5"], "whole number"),
        (["use_dora=maybe"], "use_dora must be true or false"),
        (["model_name=[小黄]"], "two names"),
        (["model="], "model cannot be empty"),
        (["keep_best=true", "save_steps=75"], "save_steps \\(75\\) must be a multiple of eval_steps \\(50\\)"),
        (["eval_metrics=[bleu]", "val_ratio=0"], "eval_metrics needs validation samples"),
        (["best_metric=rouge_l"], "eval_metrics must include it"),
        (["eval_metrics=[perplexity]"], "eval_metrics has 'perplexity'"),
        (["deepspeed=zero2"], "num_gpus is 1"),
    ],
)
def test_contradictions_are_refused_in_one_sentence(overrides, message):
    with pytest.raises(ConfigError, match=message) as err:
        TrainConfig.from_preset("lora", overrides)
    text, zh = str(err.value), localize(err.value, "zh")
    assert "\n" not in text and text.endswith((".", "?", ")"))
    assert "\n" not in zh and CJK.search(zh) and zh.endswith("。"), zh


def test_unknown_keys_are_refused_with_a_suggestion(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown setting 'lora_rnak'.*did you mean 'lora_rank'"):
        TrainConfig.from_preset("lora", ["lora_rnak=16"])
    path = tmp_path / "mine.yaml"
    path.write_text("method: lora\nlearning_rat: 1.0e-4\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown key 'learning_rat' in .*mine\.yaml.*did you mean 'learning_rate'"):
        TrainConfig.from_yaml(path)
    with pytest.raises(ConfigError, match="did you mean 'qlora'"):
        TrainConfig.from_preset("qlorra")
    with pytest.raises(ConfigError, match="key=value"):
        TrainConfig.from_preset("lora", ["lora_rank"])


def test_overrides_are_typed():
    cfg = TrainConfig.from_preset(
        "lora",
        [
            "lora_rank=16",
            "learning_rate=2e-4",
            "use_dora=true",
            "lora_targets=language,merger",
            "loraplus_lr_ratio=16",
            "deepspeed=null",
            "run_name=2024",
            "system=Note: be brief #1",
            "max_pixels=1e6",
            "num_epochs=2",
        ],
    )
    assert cfg.lora_rank == 16 and isinstance(cfg.lora_rank, int)
    assert cfg.learning_rate == 2e-4 and isinstance(cfg.learning_rate, float)
    assert cfg.use_dora is True and cfg.lora_targets == ["language", "merger"]
    assert cfg.loraplus_lr_ratio == 16.0 and cfg.deepspeed is None
    assert cfg.run_name == "2024" and cfg.system == "Note: be brief #1"
    assert cfg.max_pixels == 1_000_000 and cfg.num_epochs == 2.0


def test_yaml_1e_minus_4_without_a_dot_is_a_number(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("learning_rate: 1e-4\n", encoding="utf-8")  # YAML 1.1 reads this as a string
    assert TrainConfig.from_yaml(path).learning_rate == 1e-4


def test_to_yaml_from_yaml_round_trip(tmp_path):
    cfg = TrainConfig.from_preset("cpu_demo", ["system=你是一个导游。\n请生动有趣地回答。", "use_rslora=true"])
    path = cfg.to_yaml(tmp_path / "run" / "config.yaml")
    written = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert list(written) == list(cfg.to_dict())  # every field, resolved
    assert TrainConfig.from_yaml(path) == cfg


@pytest.mark.parametrize("base", ["lora", "cpu_demo", "full"])
def test_cli_overrides_reproduce_the_config(base):
    cfg = TrainConfig.from_preset(
        "qlora",
        [
            "system=  Line one: x\nline two #3",
            "run_name=null",
            "model_name=[\"小黄, v2\", 'yes']",
            "output_dir=true",
            "report_to=tensorboard",
            "val_dataset=none",
        ],
    )
    overrides = cfg.cli_overrides(base)
    assert TrainConfig.from_preset(base, overrides) == cfg
    assert TrainConfig.from_preset(base).cli_overrides(base) == []


def test_format_override_quotes_only_when_needed():
    assert format_override(16) == "16" and format_override(True) == "true" and format_override(None) == "null"
    assert format_override("Qwen/Qwen2.5-VL-3B-Instruct") == "Qwen/Qwen2.5-VL-3B-Instruct"
    assert format_override(["language", "vision"]) == "[language, vision]"
    assert format_override("a\nb") == '"a\\nb"'


def test_dataclass_refuses_contradictions_without_yaml():
    with pytest.raises(ConfigError, match="trains nothing"):
        TrainConfig(method="full")
    cfg = TrainConfig(method="full", train_language=True, learning_rate="1e-5")
    assert cfg.learning_rate == 1e-5
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
