"""Part names (vision tower, merger, language model) and the LoRA targets built from them."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import FAMILIES

from lab.errors import ConfigError
from lab.families import FAMILIES as FAMILY_TABLE
from lab.model_parts import in_group, lora_target_modules, module_groups
from lab.models import detect_family, load_model


def linear_names(model) -> set[str]:
    return {n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)}


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_targets_hit_exactly_one_part(loaded, family):
    model = loaded(family).model
    paths = FAMILY_TABLE[family].parts
    groups = module_groups(model)
    linears = linear_names(model) - {"lm_head"}

    def hits(parts):
        return {n for n in dict(model.named_modules()) if re.fullmatch(lora_target_modules(model, parts), n)}

    def under(prefixes):
        return {n for n in linears if in_group(n, prefixes)}

    language, vision = hits({"language"}), hits({"vision"})
    if not under(groups["merger"]):  # Gemma 3's projector is a weight matrix: no LoRA there, full training only
        with pytest.raises(ConfigError, match="no linear layers"):
            lora_target_modules(model, {"merger"})
        merger = set()
    else:
        merger = hits({"merger"})
        assert merger and merger == under(groups["merger"]) and all(in_group(n, list(paths["merger"])) for n in merger)
    assert groups["merger"] and groups["language"] == list(paths["language"])  # the table's paths, lm_head included
    assert language and language == under([paths["language"][0]])  # every linear of the language model
    assert vision and vision == under(groups["vision"]) and all(in_group(n, list(paths["vision"])) for n in vision)
    assert not (language & vision or language & merger or vision & merger)
    assert hits({"language", "vision"}) | merger == linears  # no linear layer is left out, lm_head never in


def test_peft_accepts_the_language_pattern_and_leaves_vision_mlps_alone(tiny_models):
    from peft import LoraConfig, get_peft_model

    model = load_model(tiny_models("qwen2_5_vl")).model
    pattern = lora_target_modules(model, {"language"})
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=pattern))
    lora = [n for n, _ in peft_model.named_parameters() if "lora_A" in n]
    assert len(lora) == 14
    assert all(".language_model.layers." in n for n in lora)  # Qwen2.5-VL's vision gate/up/down_proj untouched


def tiny_llava():
    from transformers import AutoModelForImageTextToText, LlavaConfig

    config = LlavaConfig(
        vision_config=dict(
            model_type="clip_vision_model",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        text_config=dict(
            model_type="llama",
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=100,
        ),
        image_token_id=99,
    )
    return AutoModelForImageTextToText.from_config(config)


def test_generic_rule_names_parts_of_other_families():
    model = tiny_llava()
    assert detect_family(model) == "other"
    assert module_groups(model) == {
        "vision": ["model.vision_tower"],
        "merger": ["model.multi_modal_projector"],
        "language": ["model.language_model", "lm_head"],
    }
    linears = linear_names(model)
    hit = {n for n in dict(model.named_modules()) if re.fullmatch(lora_target_modules(model, {"language"}), n)}
    assert hit == {n for n in linears if n.startswith("model.language_model.")}
    hit = {n for n in dict(model.named_modules()) if re.fullmatch(lora_target_modules(model, {"merger"}), n)}
    assert hit == {"model.multi_modal_projector.linear_1", "model.multi_modal_projector.linear_2"}
    with pytest.raises(ConfigError):
        lora_target_modules(model, {"lm_head"})
    with pytest.raises(ConfigError):
        lora_target_modules(model, set())
