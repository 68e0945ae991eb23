"""Export: a complete merged folder that answers like base + adapter; Hub errors; the vLLM recipe."""

import json
import shutil

import pytest
from conftest import families

from lab.errors import ConfigError, LabError
from lab.evaluation.runner import samples_from_dataset
from lab.export import REQUIRED_FILES, export_run, missing_files, openai_snippet, push_folder, vllm_command
from lab.generate import generate_batch
from lab.handle import ModelHandle
from lab.images import open_image


def _answers(loaded, samples):
    images = [[open_image(p) for p in s.images] for s in samples]
    return [g.token_ids for g in generate_batch(loaded, [s.messages for s in samples], images, max_new_tokens=12)]


@pytest.fixture(scope="module")
def exported(lora_run_dir, tmp_path_factory):
    return export_run(lora_run_dir, tmp_path_factory.mktemp("export") / "merged")


def test_merged_folder_is_complete_and_answers_like_base_plus_adapter(exported, lora_run_dir, sample_dataset):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    folder = exported.out_dir
    assert exported.merged and missing_files(folder) == []
    for names in REQUIRED_FILES:  # the files merged VLM folders are known to miss
        assert any((folder / n).is_file() for n in names), names
    assert not list(folder.glob("adapter_*")) and not (folder / "lab_tiny.json").exists()
    samples = samples_from_dataset(sample_dataset)[:6]
    handle = ModelHandle()
    handle.load_run(lora_run_dir)
    with handle.generating() as loaded:
        expected = _answers(loaded, samples)
    model = AutoModelForImageTextToText.from_pretrained(folder).eval()
    processor = AutoProcessor.from_pretrained(folder)
    plain = type("Loaded", (), {"model": model, "processor": processor})()
    assert _answers(plain, samples) == expected
    assert len({tuple(a) for a in expected}) > 1
    # the run trained lm_head apart from the embeddings: the export must keep them apart
    assert json.loads((folder / "config.json").read_text())["tie_word_embeddings"] is False
    assert model.get_output_embeddings().weight.data_ptr() != model.get_input_embeddings().weight.data_ptr()


def test_missing_processor_files_are_detected(exported, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(exported.out_dir, broken)
    (broken / "tokenizer_config.json").unlink()
    (broken / "chat_template.jinja").unlink()
    assert missing_files(broken) == ["tokenizer_config.json", "chat_template.jinja | chat_template.json"]


def test_export_refuses_a_used_folder_and_the_run_folder(lora_run_dir, exported):
    with pytest.raises(ConfigError, match="not empty"):
        export_run(lora_run_dir, exported.out_dir)
    with pytest.raises(ConfigError, match="outside the run"):
        export_run(lora_run_dir, lora_run_dir / "merged")


def test_push_to_hub_says_why_it_cannot(exported, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LabError, match="offline"):
        push_folder(exported.out_dir, "me/model")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no saved login
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(LabError, match="token"):
        push_folder(exported.out_dir, "me/model")
    with pytest.raises(ConfigError, match="user/name"):
        push_folder(exported.out_dir, "model")


def test_vllm_command_and_client_snippet():
    command = vllm_command("/srv/merged", max_model_len=8000, images_per_prompt=3, gpu_memory_utilization=0.85)
    for flag in (
        "vllm serve /srv/merged",
        "--max-model-len 8000",
        """--limit-mm-per-prompt '{"image": 3, "video": 0}'""",
        "--gpu-memory-utilization 0.85",
        "--served-model-name merged",
    ):
        assert flag in command
    with pytest.raises(ConfigError):
        vllm_command("/srv/merged", gpu_memory_utilization=1.5)
    snippet = openai_snippet("merged", port=8001)
    compile(snippet, "snippet", "exec")
    assert "model='merged'" in snippet and "127.0.0.1:8001/v1" in snippet
    assert snippet.startswith("# pip install openai\n")  # the app no longer installs the client itself


def test_the_printed_client_code_asks_a_server_about_the_image(tmp_path):
    """The code export prints, run as a person would (``image.png`` beside it), against a local server."""
    import subprocess
    import sys

    from fake_openai import FakeOpenAI, image_label
    from PIL import Image

    Image.new("RGB", (32, 24), (200, 30, 30)).save(tmp_path / "image.png")
    with FakeOpenAI() as server:
        (tmp_path / "ask.py").write_text(openai_snippet("merged", port=server.port, prompt="What is red?"))
        done = subprocess.run([sys.executable, "ask.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        (request,) = server.requests
    body = request["body"]
    assert body["model"] == "merged" and body["messages"][0]["content"][1]["text"] == "What is red?"
    assert done.stdout.strip() == image_label(body)  # the answer about this very image came back


def test_cli_export(lora_run_dir, tmp_path, capsys):
    from lab.cli import main

    out = tmp_path / "cli-merged"
    assert main(["export", "--adapter", str(lora_run_dir), "--out", str(out), "--max-model-len", "4096"]) == 0
    printed = capsys.readouterr().out
    assert missing_files(out) == [] and "--max-model-len 4096" in printed and "OpenAI(" in printed
    assert main(["export", "--adapter", str(lora_run_dir), "--out", str(out), "--push-to-hub", "me/x"]) == 2
    assert "not empty" in capsys.readouterr().err


def test_a_run_of_the_training_code_loads_evaluates_and_exports(tiny_models, tmp_path):
    """The run-folder contract end to end: a (two-step) run made by lab.training."""
    from lab.evaluation.runner import EvalSettings, run_evaluation, samples_from_run
    from lab.train_config import TrainConfig
    from lab.training.runner import run_training

    cfg = TrainConfig.from_preset(
        "cpu_demo",
        [
            f"model={tiny_models('qwen2_5_vl')}",
            "run_name=two-steps",
            "max_steps=2",
            "per_device_batch_size=2",
            "val_ratio=0.1",
        ],
    )
    run_dir = run_training(cfg, log=lambda line: None).run_dir
    handle = ModelHandle()
    handle.load_run(run_dir)
    assert handle.describe()["adapter"] == "two-steps"
    samples, _ = samples_from_run(run_dir)
    result = run_evaluation(handle, samples, EvalSettings(max_new_tokens=2, compare_base=True, limit=2))
    assert result.summary_path.startswith(str(run_dir / "eval"))
    assert missing_files(export_run("two-steps", tmp_path / "merged").out_dir) == []


def test_export_keeps_the_runs_image_size(lora_run_dir, tmp_path):
    """A run trained at its own max_pixels: the exported processor must resize images the same way."""
    import yaml
    from transformers import AutoProcessor

    run = tmp_path / "small-images"
    shutil.copytree(lora_run_dir, run, ignore=shutil.ignore_patterns("eval"))
    config = yaml.safe_load((run / "config.yaml").read_text())
    (run / "config.yaml").write_text(yaml.safe_dump({**config, "max_pixels": 112 * 112, "run_name": "small-images"}))
    out = export_run(run, tmp_path / "merged").out_dir
    handle = ModelHandle()
    handle.load_run(run)
    exported = AutoProcessor.from_pretrained(out).image_processor.size
    assert exported["longest_edge"] == 112 * 112 == handle.loaded.processor.image_processor.size["longest_edge"]


def test_hub_refusals_reach_a_chinese_page(monkeypatch, tmp_path):
    import httpx
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    from lab.errors import localize

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(LabError) as err:
        push_folder(tmp_path, "me/model")
    assert "HF_HUB_OFFLINE" in localize(err.value, "zh") and "离线" in localize(err.value, "zh")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    response = httpx.Response(401, request=httpx.Request("POST", "https://huggingface.co/api/repos/create"))

    def refuse(self, *args, **kwargs):
        raise HfHubHTTPError("401 Unauthorized", response=response)

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    with pytest.raises(LabError) as err:
        push_folder(tmp_path, "me/model", token="hf_fake")
    assert str(err.value) == "The Hugging Face Hub refused the upload to me/model (the token was refused)."
    assert localize(err.value, "zh") == "Hugging Face Hub 拒绝了上传到 me/model 的请求（token 被拒绝）。"


@pytest.mark.parametrize("family", families(slow_beyond=("qwen2_5_vl",)))
def test_every_family_merges_into_a_folder_that_answers_like_base_plus_adapter(
    family, family_run, sample_dataset, tmp_path
):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    run_dir = family_run(family)
    result = export_run(run_dir, tmp_path / "merged")
    assert result.merged and missing_files(result.out_dir) == []
    samples = samples_from_dataset(sample_dataset)[:3]
    handle = ModelHandle()
    handle.load_run(run_dir)
    with handle.generating() as loaded:
        expected = _answers(loaded, samples)
        assert loaded.family == family
    model = AutoModelForImageTextToText.from_pretrained(result.out_dir).eval()
    plain = type("Loaded", (), {"model": model, "processor": AutoProcessor.from_pretrained(result.out_dir)})()
    assert _answers(plain, samples) == expected
