"""Where models come from: the hub choice, ModelScope without its package, offline sentences, the
download progress the header shows, and trust_remote_code as an opt-in a shared server refuses."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from lab.errors import ConfigError, ModelLoadError, localize
from lab.hubs import HUB_ENV, SourceSettings, fetch_model, model_hub, modelscope_callback, reporting_tqdm
from lab.models import load_model


def test_the_hub_is_the_option_else_the_variable_else_hugging_face(monkeypatch):
    monkeypatch.delenv(HUB_ENV, raising=False)
    assert model_hub() == "huggingface"
    monkeypatch.setenv(HUB_ENV, "modelscope")
    assert model_hub() == "modelscope"
    assert model_hub("huggingface") == "huggingface"  # the option wins over the variable
    monkeypatch.setenv(HUB_ENV, "gitee")
    with pytest.raises(ConfigError, match="Unknown model hub 'gitee' \\(from LAB_MODEL_HUB\\)"):
        model_hub()
    with pytest.raises(ConfigError):
        SourceSettings(hub="gitee")


def test_modelscope_without_its_package_is_one_sentence(monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope", None)  # import modelscope raises ImportError
    monkeypatch.setenv(HUB_ENV, "modelscope")
    with pytest.raises(ModelLoadError) as err:
        load_model("Qwen/Qwen2.5-VL-3B-Instruct")
    assert str(err.value) == (
        "Downloading from ModelScope needs the modelscope package: pip install modelscope "
        "(or unset LAB_MODEL_HUB to use the Hugging Face Hub)."
    )
    assert "pip install modelscope" in localize(err.value, "zh")


def test_modelscope_downloads_through_its_package_and_reports_progress(monkeypatch, tiny_models):
    """A stand-in for the modelscope package: the choice reaches it, its progress reaches the caller."""
    calls = []

    def snapshot_download(model_id, allow_patterns=None, progress_callbacks=None):
        calls.append((model_id, allow_patterns))
        callback = progress_callbacks[0]("model.safetensors", 300)
        callback.update(100)
        callback.update(200)
        callback.end()
        return str(tiny_models("qwen2_vl"))

    monkeypatch.setitem(sys.modules, "modelscope", types.SimpleNamespace(snapshot_download=snapshot_download))
    seen = []
    loaded = load_model(
        "Qwen/Qwen2-VL-2B-Instruct", hub="modelscope", progress=lambda done, total: seen.append((done, total))
    )
    assert calls[0][0] == "Qwen/Qwen2-VL-2B-Instruct" and "*.safetensors" in calls[0][1]
    assert seen == [(100, 300), (300, 300)]
    assert loaded.family == "qwen2_vl" and loaded.name == "Qwen/Qwen2-VL-2B-Instruct"


def test_modelscope_offline_names_the_model_and_the_hub(monkeypatch):
    def snapshot_download(model_id):
        raise ConnectionError("Failed to resolve 'www.modelscope.cn'")

    monkeypatch.setitem(sys.modules, "modelscope", types.SimpleNamespace(snapshot_download=snapshot_download))
    with pytest.raises(ModelLoadError) as err:
        fetch_model("OpenBMB/MiniCPM-V-4.6", hub="modelscope")
    assert str(err.value).startswith("OpenBMB/MiniCPM-V-4.6 is not on this machine and ModelScope cannot be reached")
    assert "LAB_MODEL_HUB=huggingface" in str(err.value) and "\n" not in str(err.value)


def test_hugging_face_offline_names_the_model_and_the_way_out(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError) as err:
        load_model("lab-tests/no-such-model-xyz")
    message = str(err.value)
    assert message.startswith(
        "lab-tests/no-such-model-xyz is not on this machine and Hugging Face Hub cannot be reached"
    )
    assert (
        "hf download lab-tests/no-such-model-xyz --local-dir DIR" in message and "LAB_MODEL_HUB=modelscope" in message
    )
    assert "LAB_MODEL_HUB=modelscope" in localize(err.value, "zh")


def test_download_progress_is_counted_in_bytes():
    seen = []
    bar = reporting_tqdm(lambda done, total: seen.append((done, total)))(total=1000, unit="B")
    bar.update(250)
    bar.update(750)
    bar.close()
    files = reporting_tqdm(lambda done, total: seen.append(("files", done)))(total=3)  # a file count is not bytes
    files.update(1)
    assert seen == [(250, 1000), (1000, 1000)]
    counted = []
    callback = modelscope_callback(lambda done, total: counted.append((done, total)))
    first, second = callback("a", 10), callback("b", 30)
    first.update(10)
    second.update(5)
    assert counted == [(10, 40), (15, 40)]


def test_the_header_shows_the_download(monkeypatch):
    pytest.importorskip("gradio")
    from lab.ui.context import AppSettings, UIContext
    from lab.ui.header import status_markdown

    ctx = UIContext(AppSettings(model=""))
    ctx.handle._state = type(ctx.handle._state)("loading")
    ctx.handle.download = (1_500_000_000, 6_000_000_000)
    assert status_markdown(ctx, "en") == "Downloading the model… 25% of 6.0 GB"
    assert status_markdown(ctx, "zh") == "正在下载模型…… 6.0 GB 中已完成 25%"


def test_trust_remote_code_is_refused_on_a_shared_server(monkeypatch, tiny_models):
    from lab.handle import ModelHandle
    from lab.train_config import TrainConfig
    from lab.training.job import start_training

    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    sentence = "Models that run their own Python code (trust_remote_code) cannot be loaded on this shared server."
    with pytest.raises(ModelLoadError) as err:
        load_model("demo", trust_remote_code=True)
    assert str(err.value) == sentence
    with pytest.raises(ModelLoadError, match="cannot be loaded on this shared server"):
        ModelHandle().load_in_background("demo", trust_remote_code=True)  # at once, not in the background
    with pytest.raises(ModelLoadError, match="cannot be loaded on this shared server"):
        start_training(TrainConfig(trust_remote_code=True), ModelHandle())
    monkeypatch.delenv("LAB_RESTRICT_PATHS")
    assert load_model(tiny_models("qwen2_5_vl"), trust_remote_code=True).family == "qwen2_5_vl"  # elsewhere, an opt-in


def test_the_flag_the_custom_code_error_names_exists_on_every_loading_command(tmp_path):
    import json

    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "my_private_vlm",
                "auto_map": {
                    "AutoConfig": "configuration_my.MyConfig",
                    "AutoModelForImageTextToText": "modeling_my.MyModel",
                },
            }
        )
    )
    with pytest.raises(ModelLoadError) as err:
        load_model(tmp_path)
    assert "--trust-remote-code" in str(err.value)
    for command in ("train", "eval", "chat", "export", "label", "app"):
        shown = subprocess.run([sys.executable, "-m", "lab", command, "--help"], capture_output=True, text=True)
        assert "--trust-remote-code" in shown.stdout, command


def test_train_flags_set_the_config(monkeypatch):
    import argparse

    from lab.cli import build_parser
    from lab.cli.train import build_config

    args = build_parser().parse_args(["train", "--preset", "lora", "--trust-remote-code", "--hub", "modelscope"])
    cfg, resume = build_config(args)
    assert (cfg.trust_remote_code, cfg.hub, resume) == (True, "modelscope", False)
    plain, _ = build_config(build_parser().parse_args(["train", "--preset", "lora"]))
    assert (plain.trust_remote_code, plain.hub) == (False, None)
    assert isinstance(args, argparse.Namespace)


def test_the_pickers_offer_every_familys_presets_with_their_sizes(monkeypatch):
    from lab.families import FAMILIES
    from lab.model_sources import offered_models

    offered = dict((name, label) for label, name in offered_models("my/started-model"))
    assert list(offered)[0] == "my/started-model" and offered["demo"] == "demo"
    for family in FAMILIES.values():
        for hub_id, size in family.presets:
            assert offered[hub_id] == f"{hub_id} ({size})"
    assert offered["Qwen/Qwen2.5-VL-3B-Instruct"] == "Qwen/Qwen2.5-VL-3B-Instruct (3B)"
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    monkeypatch.setenv("LAB_ALLOWED_MODELS", "demo,google/gemma-3-4b-it")
    assert offered_models() == [("demo", "demo"), ("google/gemma-3-4b-it (4B)", "google/gemma-3-4b-it")]
