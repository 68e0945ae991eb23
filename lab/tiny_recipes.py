"""How each family's tiny stand-in is built: a small config of its real classes, and its processor.

Every recipe keeps the real architecture (module names, attention kinds, mergers) at the
smallest sizes that other tools still accept: attention heads of 32 dimensions (vLLM's CPU
build takes 32, 64, 80, ...), vision widths of 64 (bitsandbytes' 4-bit kernels want multiples
of 64), two layers of each kind, and images of a few dozen tokens. The embeddings keep the
real vocabulary's rows so the special tokens have their real ids. ``ids`` maps every special
token of :class:`lab.families.Tokens` to its id.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TEXT = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    head_dim=32,
    max_position_embeddings=4096,
)
VISION = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)


@dataclass(frozen=True)
class Recipe:
    vocab_size: int  # rows of the embedding, as in the real config
    config: Callable[[dict[str, int], int], Any]  # (ids, vocab_size) -> config
    processor: Callable[[Any, str], Any]  # (tokenizer, chat template) -> processor
    randomize: Callable[[Any], None] | None = None  # for weights that start at zero, which would cut a path


def _qwen_text(ids: dict[str, int], vocab_size: int, mrope: list[int], **changes) -> dict:
    return dict(
        TEXT,
        vocab_size=vocab_size,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": mrope},
        **changes,
    )


def _qwen_vl_ids(ids: dict[str, int]) -> dict:
    return dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def qwen2_vl_config(ids, vocab_size):
    from transformers import Qwen2VLConfig

    # mrope_section splits the head's 16 rotary frequencies over (time, height, width) as 16/24/24 of 64 do.
    return Qwen2VLConfig(
        text_config=_qwen_text(ids, vocab_size, [4, 6, 6]),
        vision_config=dict(depth=2, embed_dim=64, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=14),
        tie_word_embeddings=True,
        **_qwen_vl_ids(ids),
    )


def qwen2_5_vl_config(ids, vocab_size):
    from transformers import Qwen2_5_VLConfig

    # Window attention in block 0, full attention in block 1, as in the real tower.
    vision = dict(
        depth=2,
        hidden_size=64,
        intermediate_size=128,
        num_heads=2,
        out_hidden_size=64,
        patch_size=14,
        window_size=56,
        fullatt_block_indexes=[1],
    )
    return Qwen2_5_VLConfig(
        text_config=_qwen_text(ids, vocab_size, [4, 6, 6]),
        vision_config=vision,
        tie_word_embeddings=True,
        **_qwen_vl_ids(ids),
    )


def qwen3_vl_config(ids, vocab_size):
    from transformers import Qwen3VLConfig

    text = _qwen_text(ids, vocab_size, [6, 5, 5])
    text["rope_parameters"].update(rope_theta=5e6, mrope_interleaved=True)
    vision = dict(
        depth=2,
        hidden_size=64,
        intermediate_size=128,
        num_heads=2,
        out_hidden_size=64,
        patch_size=16,
        num_position_embeddings=64,
        deepstack_visual_indexes=[0],
    )
    return Qwen3VLConfig(text_config=text, vision_config=vision, tie_word_embeddings=True, **_qwen_vl_ids(ids))


def _qwen3_5_text(ids, vocab_size) -> dict:
    # One linear-attention (Gated DeltaNet) layer and one full-attention layer, as the real 3:1 pattern
    # has both; a quarter of each head is rotary (8 of 32 dimensions: 2/1/1 over time, height, width).
    text = _qwen_text(
        ids,
        vocab_size,
        [2, 1, 1],
        layer_types=["linear_attention", "full_attention"],
        linear_key_head_dim=32,
        linear_value_head_dim=32,
        linear_num_key_heads=2,
        linear_num_value_heads=2,
        linear_conv_kernel_dim=4,
    )
    text["rope_parameters"].update(rope_theta=1e7, mrope_interleaved=True, partial_rotary_factor=0.25)
    return text


def qwen3_5_config(ids, vocab_size):
    from transformers import Qwen3_5Config

    vision = dict(
        depth=2,
        hidden_size=64,
        intermediate_size=128,
        num_heads=2,
        out_hidden_size=64,
        patch_size=16,
        num_position_embeddings=64,
    )
    return Qwen3_5Config(
        text_config=_qwen3_5_text(ids, vocab_size), vision_config=vision, tie_word_embeddings=True, **_qwen_vl_ids(ids)
    )


def minicpmv4_6_config(ids, vocab_size):
    from transformers import MiniCPMV4_6Config

    text = dict(_qwen3_5_text(ids, vocab_size), model_type="qwen3_5_text")
    vision = dict(VISION, image_size=224, patch_size=14)
    return MiniCPMV4_6Config(
        text_config=text,
        vision_config=vision,
        insert_layer_id=0,
        image_size=224,
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        tie_word_embeddings=True,
    )


def internvl_config(ids, vocab_size):
    from transformers import InternVLConfig

    text = dict(
        TEXT,
        model_type="qwen2",
        vocab_size=vocab_size,
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        rope_parameters={"rope_type": "default", "rope_theta": 1e6},
    )
    vision = dict(VISION, image_size=[64, 64], patch_size=[8, 8])
    return InternVLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids["<IMG_CONTEXT>"],
        image_seq_length=16,
        downsample_ratio=0.5,
        tie_word_embeddings=True,
    )


def gemma3_config(ids, vocab_size):
    from transformers import Gemma3Config

    text = dict(
        TEXT,
        model_type="gemma3_text",
        vocab_size=vocab_size,
        query_pre_attn_scalar=32,
        sliding_window=64,
        layer_types=["sliding_attention", "full_attention"],
        pad_token_id=ids["<pad>"],
        eos_token_id=ids["<eos>"],
        bos_token_id=ids["<bos>"],
    )
    vision = dict(VISION, model_type="siglip_vision_model", image_size=64, patch_size=8, vision_use_head=False)
    # 64 patches pooled 2x2 into 16 image tokens, as 4096 patches become 256 in the real model.
    return Gemma3Config(
        text_config=text,
        vision_config=vision,
        mm_tokens_per_image=16,
        boi_token_index=ids["<start_of_image>"],
        eoi_token_index=ids["<end_of_image>"],
        image_token_index=ids["<image_soft_token>"],
        tie_word_embeddings=True,
    )


def gemma3_randomize(model) -> None:
    """Gemma 3 starts its image projection at zero: no image would reach the language model, and no
    gradient the vision tower, until trained. The stand-in starts it random, as a trained one is."""
    import torch

    with torch.no_grad():
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, 0.02)


def smolvlm_config(ids, vocab_size):
    from transformers import SmolVLMConfig

    text = dict(
        TEXT,
        model_type="llama",
        vocab_size=vocab_size,
        bos_token_id=ids["<|im_start|>"],
        eos_token_id=ids["<end_of_utterance>"],
        pad_token_id=ids["<|im_end|>"],
        tie_word_embeddings=True,
    )
    vision = dict(VISION, image_size=64, patch_size=8)
    return SmolVLMConfig(
        text_config=text, vision_config=vision, image_token_id=ids["<image>"], scale_factor=2, tie_word_embeddings=True
    )


# ---------------------------------------------------------------- processors: a 224x224 picture is 16-64 tokens


def _qwen_sizes(patch: int, frames: bool = False) -> dict:
    factor = patch * 2  # patch size x spatial merge size: one image token covers factor x factor pixels
    longest = (64 if frames else 36) * factor**2
    return dict(
        patch_size=patch,
        merge_size=2,
        temporal_patch_size=2,
        size={"shortest_edge": 4 * factor**2, "longest_edge": longest},
    )


def qwen2_vl_processor(tokenizer, template, processor_class: str = "Qwen2VLProcessor"):
    import transformers
    from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    processor = getattr(transformers, processor_class)
    return processor(
        Qwen2VLImageProcessor(**_qwen_sizes(14)),
        tokenizer,
        Qwen2VLVideoProcessor(**_qwen_sizes(14, True)),
        chat_template=template,
    )


def qwen2_5_vl_processor(tokenizer, template):
    return qwen2_vl_processor(tokenizer, template, "Qwen2_5_VLProcessor")


def qwen3_vl_processor(tokenizer, template):
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    half = dict(image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])  # Qwen3-VL's normalisation
    return Qwen3VLProcessor(
        Qwen2VLImageProcessor(**_qwen_sizes(16), **half),
        tokenizer,
        Qwen3VLVideoProcessor(**_qwen_sizes(16, True), **half),
        chat_template=template,
    )


def minicpmv4_6_processor(tokenizer, template):
    from transformers import MiniCPMV4_6ImageProcessor, MiniCPMV4_6Processor, MiniCPMV4_6VideoProcessor

    # Slices of 224x224 (16x16 patches of 14, merged 16 to 1: 16 tokens each), at most 2 next to the whole picture.
    sizes = dict(scale_resolution=224, patch_size=14, max_slice_nums=2, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return MiniCPMV4_6Processor(
        MiniCPMV4_6ImageProcessor(**sizes),
        MiniCPMV4_6VideoProcessor(**sizes, max_num_frames=4),
        tokenizer,
        chat_template=template,
    )


def internvl_processor(tokenizer, template):
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    # Tiles of 64x64 (16 tokens each): up to 2 tiles and a thumbnail.
    tiles = dict(size={"height": 64, "width": 64}, crop_to_patches=True, min_patches=1, max_patches=2)
    return InternVLProcessor(
        GotOcr2ImageProcessor(**tiles),
        tokenizer,
        InternVLVideoProcessor(size={"height": 64, "width": 64}),
        image_seq_length=16,
        chat_template=template,
    )


def gemma3_processor(tokenizer, template):
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    image = Gemma3ImageProcessor(size={"height": 64, "width": 64}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    return Gemma3Processor(image, tokenizer, chat_template=template, image_seq_length=16)


def smolvlm_processor(tokenizer, template):
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    # Tiles of 64x64 (16 tokens each) from a picture resized to at most 128 pixels, plus the whole picture.
    sizes = dict(size={"longest_edge": 128}, max_image_size={"longest_edge": 64})
    return SmolVLMProcessor(
        SmolVLMImageProcessor(**sizes, do_image_splitting=True),
        tokenizer,
        SmolVLMVideoProcessor(**sizes),
        image_seq_len=16,
        chat_template=template,
    )


QWEN2_VL = Recipe(151936, qwen2_vl_config, qwen2_vl_processor)
QWEN2_5_VL = Recipe(151936, qwen2_5_vl_config, qwen2_5_vl_processor)
QWEN3_VL = Recipe(151936, qwen3_vl_config, qwen3_vl_processor)
QWEN3_5 = Recipe(248320, qwen3_5_config, qwen3_vl_processor)
MINICPMV4_6 = Recipe(248320, minicpmv4_6_config, minicpmv4_6_processor)
INTERNVL = Recipe(151680, internvl_config, internvl_processor)
GEMMA3 = Recipe(262208, gemma3_config, gemma3_processor, gemma3_randomize)
SMOLVLM = Recipe(49280, smolvlm_config, smolvlm_processor)
