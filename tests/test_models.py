"""Model loading and tiny offline models."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch
from conftest import FAMILIES, SAMPLE
from PIL import Image, ImageDraw

from lab import paths
from lab.errors import ConfigError, ModelLoadError
from lab.families import FAMILIES as FAMILY_TABLE
from lab.images import list_images, open_image
from lab.models import detect_family, load_model, resolve_device, resolve_dtype
from lab.tiny import build_tiny_model, corpus_texts, ensure_demo_model, is_tiny_model, tiny_model_info

TEXTS = [
    "Describe the image in one sentence.",
    "这是一块绿色的电路板，上面有电阻和电容。",
    "Mixed 混合 text: résumé, naïve, 3.14, 😀 and\ttabs\nnew lines.",
    '{"标签": "猫", "confidence": 0.9}',
]


def sample_image() -> Image.Image:
    images = list_images(SAMPLE / "images") if (SAMPLE / "images").is_dir() else []
    if images:
        return open_image(images[0], max_pixels=224 * 224)
    image = Image.new("RGB", (224, 224), "white")
    ImageDraw.Draw(image).rectangle([40, 60, 180, 160], fill=(30, 140, 60), outline="black")
    return image


def chat(with_answer: bool = True) -> list[dict]:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "这是什么元件？What is it?"}]}]
    if with_answer:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": "一个电容。A capacitor."}]})
    return messages


@pytest.mark.parametrize("family", FAMILIES)
def test_forward_with_image_gives_a_loss_and_generate_adds_tokens(loaded, family):
    lm = loaded(family)
    assert (lm.family, lm.device, lm.dtype, lm.quantization, lm.is_tiny) == (family, "cpu", torch.float32, None, True)
    processor, model = lm.processor, lm.model
    text = processor.apply_chat_template(chat(), tokenize=False)
    inputs = processor(text=[text], images=[sample_image()], return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model(**inputs, labels=inputs["input_ids"])
    # An untrained model guesses uniformly: the loss is near log(vocabulary size).
    assert abs(out.loss.item() - math.log(model.config.get_text_config().vocab_size)) < 1.0

    prompt = processor.apply_chat_template(chat(with_answer=False), tokenize=False, add_generation_prompt=True)
    inputs = processor(text=[prompt], images=[sample_image()], return_tensors="pt", add_special_tokens=False)
    generated = model.generate(**inputs, max_new_tokens=4, min_new_tokens=4)
    assert generated.shape == (1, inputs["input_ids"].shape[1] + 4)
    assert torch.equal(generated[:, : inputs["input_ids"].shape[1]], inputs["input_ids"])


def test_qwen_chat_template_renders_image_placeholders(loaded):
    processor, config = loaded("qwen2_5_vl").processor, loaded("qwen2_5_vl").model.config
    text = processor.apply_chat_template(chat(), tokenize=False)
    assert text.startswith("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>这是什么元件？What is it?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n一个电容。A capacitor.<|im_end|>\n")
    inputs = processor(text=[text], images=[Image.new("RGB", (224, 224), "red")], return_tensors="pt")
    assert int((inputs["input_ids"] == config.image_token_id).sum()) == int(inputs["image_grid_thw"].prod()) // 4


@pytest.mark.parametrize("family", FAMILIES)
def test_chat_template_puts_the_picture_before_the_question_and_the_answer_last(loaded, family):
    processor, config = loaded(family).processor, loaded(family).model.config
    text = processor.apply_chat_template(chat(), tokenize=False)
    question, answer = text.index("这是什么元件？What is it?"), text.index("一个电容。A capacitor.")
    assert question < answer and text[answer:].count("A capacitor.") == 1
    inputs = processor(
        text=[text], images=[Image.new("RGB", (224, 224), "red")], return_tensors="pt", add_special_tokens=False
    )
    image_tokens = [i for i, t in enumerate(inputs["input_ids"][0].tolist()) if t == config.image_token_id]
    assert 16 <= len(image_tokens) <= 100  # small enough for CPU tests
    tokens = processor.tokenizer
    assert tokens.decode(inputs["input_ids"][0, image_tokens[-1] + 1 :]).count("这是什么元件？What is it?") == 1


@pytest.mark.parametrize("family", FAMILIES)
def test_tokenizer_round_trips_text_and_has_the_real_special_ids(loaded, family):
    lm = loaded(family)
    tokenizer, config, spec = lm.processor.tokenizer, lm.model.config, FAMILY_TABLE[family].tokens
    for text in TEXTS:
        assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text
    assert len(tokenizer.encode("电路板的图片", add_special_tokens=False)) < len(
        "电路板的图片".encode()
    )  # merges, not bytes
    # Every special token has the id of the real tokenizer, within the model's embedding.
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in spec.special} == spec.special
    assert len(tokenizer) == spec.size and config.get_text_config().vocab_size >= spec.size
    assert config.image_token_id == spec.special[FAMILY_TABLE[family].image_token]
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == (spec.eos, spec.pad, spec.bos)
    assert lm.model.generation_config.eos_token_id == [spec.special[t] for t in spec.stop]
    plain = tokenizer.encode("hi", add_special_tokens=False)
    assert tokenizer.decode([spec.special[spec.pad], *plain], skip_special_tokens=True) == "hi"
    assert ("<think>" in tokenizer.get_vocab()) == ("<think>" in spec.special)


def test_qwen_special_ids_are_those_other_tools_hard_code(loaded):
    """ms-swift's Qwen2-VL template names <|image_pad|> 151655 and <|video_pad|> 151656; Qwen3.5's are 248056-7."""
    assert loaded("qwen2_vl").processor.tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>"]) == [
        151655,
        151656,
    ]
    assert loaded("qwen2_5_vl").model.config.image_token_id == 151655
    assert loaded("qwen3_5").model.config.image_token_id == 248056


@pytest.mark.parametrize("family", FAMILIES)
def test_stand_ins_fit_other_tools_and_stay_small(loaded, family):
    """Head sizes vLLM's CPU build accepts, vision widths bitsandbytes' 4-bit kernels take, a model of a few MB
    besides its embedding (whose rows the real vocabulary sets)."""
    model = loaded(family).model
    text = model.config.get_text_config()
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert head_dim in (32, 64, 80, 96, 112, 128, 256)
    vision = model.config.vision_config
    assert vision.hidden_size % 64 == 0
    embedding = model.get_input_embeddings().weight.numel()
    assert sum(p.numel() for p in model.parameters()) - embedding < 1_000_000
    assert text.hidden_size <= 64


def test_detect_family(loaded):
    from transformers import (
        BertConfig,
        Gemma3Config,
        InternVLConfig,
        LlavaConfig,
        MiniCPMV4_6Config,
        Qwen2_5_VLConfig,
        Qwen2VLConfig,
        Qwen3_5Config,
        Qwen3VLConfig,
        SmolVLMConfig,
    )

    assert detect_family(Qwen2VLConfig()) == "qwen2_vl"
    assert detect_family(Qwen2_5_VLConfig()) == "qwen2_5_vl"
    assert detect_family(Qwen3VLConfig()) == "qwen3_vl"
    assert detect_family(Qwen3_5Config()) == "qwen3_5"
    assert detect_family(MiniCPMV4_6Config()) == "minicpmv4_6"
    assert detect_family(InternVLConfig()) == "internvl"
    assert detect_family(Gemma3Config()) == "gemma3"
    assert detect_family(SmolVLMConfig()) == "smolvlm"
    assert detect_family(LlavaConfig()) == "other"  # loads and trains the generic way
    assert detect_family(BertConfig()) == "other"
    assert detect_family({"model_type": "qwen3_vl"}) == "qwen3_vl"
    assert detect_family(loaded("qwen2_vl").model) == "qwen2_vl"
    assert set(FAMILIES) == set(FAMILY_TABLE)  # every family of the table has its tiny stand-in here


def test_resolve_device_and_dtype(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("bf16", "cpu") == torch.bfloat16
    assert resolve_dtype(torch.float16, "cpu") == torch.float16
    with pytest.raises(ConfigError):
        resolve_dtype("int3", "cpu")
    with pytest.raises(ConfigError):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert resolve_dtype("auto", "cuda") == torch.float16


def one_sentence(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_hub_id_offline_says_to_download_and_pass_a_folder():
    with pytest.raises(ModelLoadError) as err:
        load_model("lab-tests/no-such-model-xyz")
    assert "download" in one_sentence(err) and "folder" in str(err.value)


def test_missing_folder_file_and_folder_without_config(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_model(str(tmp_path / "nowhere" / "model"))
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match="is a file"):
        load_model(tmp_path / "weights.bin")
    with pytest.raises(ModelLoadError, match="no config.json") as err:
        load_model(tmp_path)
    one_sentence(err)


def test_text_only_model_is_refused(tmp_path):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(
        tmp_path
    )
    with pytest.raises(ModelLoadError, match="not an image-text-to-text") as err:
        load_model(tmp_path)
    one_sentence(err)


def test_custom_code_needs_explicit_trust(tmp_path):
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
    with pytest.raises(ModelLoadError, match="trust_remote_code=True") as err:
        load_model(tmp_path)
    one_sentence(err)
    # A known model type whose image-text-to-text class is custom code needs the same consent.
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "model_type": "qwen2",
                "auto_map": {"AutoModelForImageTextToText": "modeling_my.MyModel"},
            }
        )
    )
    with pytest.raises(ModelLoadError, match="trust_remote_code=True"):
        load_model(tmp_path)


def test_gpu_only_options_without_a_gpu(tiny_models, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    folder = tiny_models("qwen2_5_vl")
    with pytest.raises(ModelLoadError, match="needs a CUDA GPU") as err:
        load_model(folder, device="cuda")
    one_sentence(err)
    with pytest.raises(ModelLoadError, match="needs a CUDA GPU"):
        load_model(folder, attn_implementation="flash_attention_2")
    with pytest.raises(ConfigError):
        load_model(folder, quantization="3bit")


def test_min_and_max_pixels_change_the_number_of_image_tokens(tiny_models):
    lm = load_model(tiny_models("qwen2_5_vl"), min_pixels=28 * 28, max_pixels=4 * 28 * 28)
    text = lm.processor.apply_chat_template(chat(), tokenize=False)
    inputs = lm.processor(text=[text], images=[Image.new("RGB", (224, 224))], return_tensors="pt")
    assert int((inputs["input_ids"] == lm.model.config.image_token_id).sum()) == 4
    with pytest.raises(ConfigError, match="larger than"):
        load_model(tiny_models("qwen2_5_vl"), min_pixels=10_000, max_pixels=1_000)


@pytest.mark.parametrize("family", ["internvl", "minicpmv4_6", "smolvlm"])
def test_max_pixels_turns_each_familys_own_knob(tiny_models, family):
    """InternVL's tiles, MiniCPM-V's slices, SmolVLM's longest edge: fewer pixels, fewer image tokens."""

    def image_tokens(lm):
        text = lm.processor.apply_chat_template(chat(), tokenize=False)
        inputs = lm.processor(
            text=[text], images=[Image.new("RGB", (600, 300))], return_tensors="pt", add_special_tokens=False
        )
        return int((inputs["input_ids"] == lm.model.config.image_token_id).sum())

    free = load_model(tiny_models(family))
    bounded = load_model(tiny_models(family), max_pixels=64 * 64)
    assert image_tokens(bounded) < image_tokens(free)
    assert (
        load_model(tiny_models(family), max_pixels=10**9).processor.image_processor.to_dict()
        == free.processor.image_processor.to_dict()
    )  # only ever lowered: these processors resize up to their limit


def test_a_fixed_image_size_has_no_pixel_bounds_to_set(tiny_models):
    lm = load_model(tiny_models("gemma3"), min_pixels=28 * 28, max_pixels=64 * 64)
    assert lm.processor.image_processor.size == load_model(tiny_models("gemma3")).processor.image_processor.size


def test_4bit_on_cpu(tiny_models):
    from lab.quantization import bitsandbytes_problem

    problem = bitsandbytes_problem("4bit", "cpu")
    if problem:
        pytest.skip(problem)
    import bitsandbytes as bnb

    lm = load_model(tiny_models("qwen2_5_vl"), quantization="4bit", device="cpu")
    assert lm.quantization == "4bit"
    assert isinstance(lm.model.model.language_model.layers[0].self_attn.q_proj, bnb.nn.Linear4bit)
    text = lm.processor.apply_chat_template(chat(), tokenize=False)
    inputs = lm.processor(text=[text], images=[sample_image()], return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(lm.model(**inputs, labels=inputs["input_ids"]).loss)


def test_4bit_on_cpu_trains_after_an_evaluation(tiny_models):
    """QLoRA alternates inference (mid-run evaluation) and training on the same 4-bit layers.

    bitsandbytes 0.50 repacked a layer's weight for its AVX512-BF16 kernel on the first
    no-grad eval pass, after which the layer could not be trained.
    """
    from peft import LoraConfig, get_peft_model

    from lab.quantization import bitsandbytes_problem

    problem = bitsandbytes_problem("4bit", "cpu")
    if problem:
        pytest.skip(problem)
    lm = load_model(tiny_models("qwen2_5_vl"), quantization="4bit", device="cpu")
    model = get_peft_model(lm.model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    text = lm.processor.apply_chat_template(chat(), tokenize=False)
    inputs = lm.processor(text=[text], images=[sample_image()], return_tensors="pt")
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):
        model.eval()
        with torch.no_grad():
            eval_loss = model(**inputs, labels=inputs["input_ids"]).loss
        model.train()
        loss = model(**inputs, labels=inputs["input_ids"]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        assert torch.isfinite(eval_loss) and torch.isfinite(loss)
    changed = [n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, lora[n])]
    assert changed and len(changed) == len(lora)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("quantization", [None, "4bit"])
def test_loads_on_gpu_in_half_precision(tiny_models, quantization):
    if quantization:
        pytest.importorskip("bitsandbytes")
    lm = load_model(tiny_models("qwen2_5_vl"), quantization=quantization)
    half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    assert (lm.device, lm.dtype) == ("cuda", half)
    assert {p.device.type for p in lm.model.parameters()} == {"cuda"}
    prompt = lm.processor.apply_chat_template(chat(with_answer=False), tokenize=False, add_generation_prompt=True)
    inputs = lm.processor(text=[prompt], images=[sample_image()], return_tensors="pt").to("cuda")
    with torch.no_grad():
        assert torch.isfinite(lm.model(**inputs, labels=inputs["input_ids"]).loss)
    assert lm.model.generate(**inputs, max_new_tokens=3, min_new_tokens=3).shape[1] == inputs["input_ids"].shape[1] + 3


def test_tiny_build_is_deterministic_and_seeded(tmp_path, tiny_models):
    reference = tiny_models("qwen2_vl")
    again = build_tiny_model("qwen2_vl", tmp_path / "again", seed=0)
    other = build_tiny_model("qwen2_vl", tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (reference / name).read_bytes(), name
    assert (other / "model.safetensors").read_bytes() != (reference / "model.safetensors").read_bytes()
    assert tiny_model_info(other)["seed"] == 1 and is_tiny_model(other)


def test_tiny_build_replaces_only_tiny_models(tmp_path):
    target = build_tiny_model("qwen3_vl", tmp_path / "m", seed=0)
    assert build_tiny_model("qwen3_vl", target, seed=2) == target and tiny_model_info(target)["seed"] == 2
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging folder left behind
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a tiny model"):
        build_tiny_model("qwen3_vl", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert not is_tiny_model(tmp_path / "mine")
    with pytest.raises(ConfigError, match="Unknown model family"):
        build_tiny_model("llama", tmp_path / "x")


def test_ensure_demo_model_builds_once_in_the_workspace(lab_home):
    folder = ensure_demo_model("qwen2_5_vl")
    assert folder == paths.demo_model_dir("qwen2_5_vl") and folder.is_relative_to(lab_home)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert ensure_demo_model("qwen2_5_vl") == folder
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert load_model(folder).is_tiny


def test_corpus_takes_every_text_of_the_sample_jsonl(tmp_path):
    record = {
        "messages": [
            {"role": "user", "content": "<image>独一无二的问题"},
            {"role": "assistant", "content": "zyxwv answer"},
        ]
    }
    (tmp_path / "data.jsonl").write_text(json.dumps(record, ensure_ascii=False) + "\n{broken line\n", encoding="utf-8")
    texts = corpus_texts(tmp_path)
    assert "<image>独一无二的问题" in texts and "zyxwv answer" in texts
    assert any("电路板" in t for t in texts) and any("circuit board" in t for t in texts)
    assert corpus_texts(tmp_path / "missing") == corpus_texts(tmp_path / "also-missing")


def test_cli_tiny_model(tmp_path, capsys):
    from lab.cli import main

    out = tmp_path / "cli-model"
    assert main(["tiny-model", "--family", "qwen2_vl", "--out", str(out), "--seed", "5"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == str(out)
    assert re.search(r"[\d,]+ parameters, vocabulary of [\d,]+ tokens", printed[1])
    assert tiny_model_info(out) == {**tiny_model_info(out), "family": "qwen2_vl", "seed": 5}

    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file.txt").write_text("x")
    assert main(["tiny-model", "--out", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_qlora_options_reach_the_quantization_config():
    """double_quant and the compute dtype of a QLoRA config change what bitsandbytes is asked for."""
    import torch

    from lab.quantization import quantization_config
    from lab.train_config import TrainConfig
    from lab.training.runner import load_options

    try:
        default = quantization_config("4bit", "cpu")
    except Exception as err:  # bitsandbytes missing or unusable here
        pytest.skip(f"4-bit quantization unavailable: {err}")
    assert default.bnb_4bit_use_double_quant and default.bnb_4bit_compute_dtype == torch.float32
    custom = quantization_config("4bit", "cpu", double_quant=False, compute_dtype="bfloat16")
    assert not custom.bnb_4bit_use_double_quant and custom.bnb_4bit_compute_dtype == torch.bfloat16

    cfg = TrainConfig.from_preset("qlora", ["double_quant=false", "quant_compute_dtype=float16"])
    options = load_options(cfg, "cpu")
    assert options["quantization"] == "4bit" and options["double_quant"] is False
    assert options["quant_compute_dtype"] == "float16"
    assert "quantization" not in load_options(TrainConfig.from_preset("lora"), "cpu")


def test_load_errors_reach_a_chinese_page(tmp_path, monkeypatch):
    from lab import quantization
    from lab.errors import localize
    from lab.text import Msg

    with pytest.raises(ModelLoadError) as err:
        load_model(str(tmp_path / "nowhere"))
    assert localize(err.value, "zh") == f"模型文件夹 {tmp_path / 'nowhere'} 不存在。"
    # The reason bitsandbytes gives is itself a message, shown in the page's language inside the sentence.
    monkeypatch.setattr(
        quantization, "bitsandbytes_problem", lambda q, d: Msg("the bitsandbytes package is not installed")
    )
    with pytest.raises(ModelLoadError) as err:
        quantization.quantization_config("4bit", "cpu")
    assert "(the bitsandbytes package is not installed)" in str(err.value)
    assert "（未安装 bitsandbytes 包）" in localize(err.value, "zh")
