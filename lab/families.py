"""The model families the lab knows, one entry each: what differs between them lives here.

Everything else (loading, the three parts, the collator, generation, export, the tiny
stand-ins, the model picker) reads :data:`FAMILIES` instead of asking ``family == ...``.
A model whose ``model_type`` has no entry is trained the generic way (:data:`GENERIC`): any
``AutoModelForImageTextToText`` with a chat template, its parts found by their usual names.

Adding a family is one :class:`Family` entry below (its tokens, parts, pixel knob, presets),
its tiny recipe in :mod:`lab.tiny_recipes`, and its tiny-model test (the family tests are
parametrized over this table).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from lab import chat_templates, tiny_recipes
from lab.errors import ConfigError


@dataclass(frozen=True)
class Tokens:
    """The real tokenizer's layout, so a tiny stand-in has the same special-token ids.

    ``size`` is the real tokenizer's length (its regular vocabulary fills the ids that the
    special tokens leave free); ``special`` maps each special token to its real id; ``extra``
    names the tokens the processor reads as tokenizer attributes (``image_token``, ...).
    """

    tokenizer_class: str  # the class tokenizer_config.json names
    style: str  # "bytelevel" (GPT-2/Qwen byte-level BPE) or "sentencepiece" (Gemma: "▁" and byte fallback)
    size: int
    special: dict[str, int]
    bos: str | None
    eos: str
    pad: str
    unk: str | None = None
    stop: tuple[str, ...] = ()  # what ends an answer (generation_config.eos_token_id), the end of a turn first
    extra: dict[str, str] = field(default_factory=dict)
    normal: tuple[str, ...] = ()  # added tokens that are not special (Qwen's <tool_call>, <think>)


@dataclass(frozen=True)
class Family:
    """One family of vision-language models, as the lab needs to know it."""

    name: str  # the config's model_type
    title: str  # as people write it
    presets: tuple[tuple[str, str], ...]  # (Hub id, size) of the checkpoints offered in the model picker
    image_token: str  # the token whose embeddings the image features replace (config.image_token_id)
    parts: dict[str, tuple[str, ...]] | None = None  # module paths of vision / merger / language (None: by name)
    pixels: str = "fixed"  # how max_pixels reaches the processor: qwen | tiles | slices | splits | fixed
    expands: str = "replace"  # "repeat": the placeholder becomes n copies of itself; "replace": a longer text
    packed: tuple[str, ...] = ()  # image inputs a batch joins along their last dimension (not stacks)
    video: bool = False  # trains and answers on video through lab/video.py (qwen-vl-utils frames, Qwen grids)
    # the vision tower's index tensors the data loader computes (lab/training/tower_index.py):
    # "positions", "seqlens", "windows"; "host_grid" where, given those, the model reads its picture
    # grids only on the host (they then stay there, and the loader checks the placeholder counts)
    tower_index: tuple[str, ...] = ()
    # the language model attends causally within the padded batch and nothing else: under SDPA, the
    # training step hands it the ready 4-D mask (lab/training/speed.py: ready_causal_mask)
    causal_mask: bool = False
    box_format: str | None = None  # grounding boxes: "0-1000" grid, "pixels" of the resized image, or None
    tokens: Tokens | None = None  # the real tokenizer (for the tiny stand-in)
    chat_template: str = ""
    tiny: Any = None  # a lab.tiny_recipes.Recipe: config and processor of the tiny stand-in


def _qwen_specials(first: int, *groups: tuple[str, ...]) -> dict[str, int]:
    """Qwen's added tokens get consecutive ids after the byte-level vocabulary, in this order."""
    names = [name for group in groups for name in group]
    return {name: first + i for i, name in enumerate(names)}


_QWEN_BASE = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
_QWEN_TOOLS = (
    "<tool_call>",
    "</tool_call>",
    "<|fim_prefix|>",
    "<|fim_middle|>",
    "<|fim_suffix|>",
    "<|fim_pad|>",
    "<|repo_name|>",
    "<|file_sep|>",
)
_QWEN_THINK = ("<tool_response>", "</tool_response>", "<think>", "</think>")
_QWEN_STOP = ("<|im_end|>", "<|endoftext|>")


def _qwen_tokens(
    first: int,
    *groups: tuple[str, ...],
    extra_tokens: tuple[str, ...] = (),
    tokenizer_class: str = "Qwen2Tokenizer",
    attrs: dict | None = None,
) -> Tokens:
    special = _qwen_specials(first, *groups, extra_tokens)
    normal = tuple(t for group in groups[1:] for t in group)  # tools and thinking tokens are not special
    return Tokens(
        tokenizer_class,
        "bytelevel",
        max(special.values()) + 1,
        special,
        bos=None,
        eos="<|im_end|>",
        pad="<|endoftext|>",
        stop=_QWEN_STOP,
        extra=attrs or {},
        normal=normal,
    )


QWEN_PARTS = {
    "vision": ("model.visual",),
    "merger": ("model.visual.merger", "model.visual.deepstack_merger_list"),
    "language": ("model.language_model", "lm_head"),
}

# What the Qwen-VL families share: the image placeholder repeated per image token, the same
# module paths, qwen-vl-utils' pixel rule, video through lab/video.py, and the tower's patch
# positions and attention boundaries computed by the data loader.
_QWEN_VL = dict(
    image_token="<|image_pad|>",
    parts=QWEN_PARTS,
    pixels="qwen",
    expands="repeat",
    video=True,
    tower_index=("positions", "seqlens"),
)
_PROJECTOR_PARTS = {
    "vision": ("model.vision_tower",),
    "merger": ("model.multi_modal_projector",),
    "language": ("model.language_model", "lm_head"),
}

_ENTRIES = [
    Family(
        "qwen2_vl",
        "Qwen2-VL",
        (
            ("Qwen/Qwen2-VL-2B-Instruct", "2B"),
            ("Qwen/Qwen2-VL-7B-Instruct", "7B"),
            ("Qwen/Qwen2-VL-72B-Instruct", "72B"),
        ),
        **{**_QWEN_VL, "tower_index": ("positions", "seqlens", "host_grid")},
        causal_mask=True,
        box_format="0-1000",
        tokens=_qwen_tokens(151643, _QWEN_BASE),
        chat_template=chat_templates.QWEN2_VL,
        tiny=tiny_recipes.QWEN2_VL,
    ),
    Family(
        "qwen2_5_vl",
        "Qwen2.5-VL",
        (
            ("Qwen/Qwen2.5-VL-3B-Instruct", "3B"),
            ("Qwen/Qwen2.5-VL-7B-Instruct", "7B"),
            ("Qwen/Qwen2.5-VL-32B-Instruct", "32B"),
            ("Qwen/Qwen2.5-VL-72B-Instruct", "72B"),
        ),
        **{**_QWEN_VL, "tower_index": ("positions", "seqlens", "windows", "host_grid")},
        causal_mask=True,
        box_format="pixels",
        tokens=_qwen_tokens(151643, _QWEN_BASE, _QWEN_TOOLS),
        chat_template=chat_templates.QWEN2_VL,
        tiny=tiny_recipes.QWEN2_5_VL,
    ),
    Family(
        "qwen3_vl",
        "Qwen3-VL",
        (
            ("Qwen/Qwen3-VL-2B-Instruct", "2B"),
            ("Qwen/Qwen3-VL-4B-Instruct", "4B"),
            ("Qwen/Qwen3-VL-8B-Instruct", "8B"),
            ("Qwen/Qwen3-VL-32B-Instruct", "32B"),
        ),
        **_QWEN_VL,
        box_format="0-1000",
        tokens=_qwen_tokens(151643, _QWEN_BASE, _QWEN_TOOLS, _QWEN_THINK),
        chat_template=chat_templates.QWEN2_VL,
        tiny=tiny_recipes.QWEN3_VL,
    ),
    Family(
        "qwen3_5",
        "Qwen3.5",
        (
            ("Qwen/Qwen3.5-0.8B", "0.8B"),
            ("Qwen/Qwen3.5-2B", "2B"),
            ("Qwen/Qwen3.5-4B", "4B"),
            ("Qwen/Qwen3.5-9B", "9B"),
            ("Qwen/Qwen3.5-27B", "27B"),
        ),
        **_QWEN_VL,
        box_format="0-1000",
        tokens=_qwen_tokens(248044, _QWEN_BASE, _QWEN_TOOLS, _QWEN_THINK, tokenizer_class="Qwen3_5Tokenizer"),
        chat_template=chat_templates.QWEN3_5,
        tiny=tiny_recipes.QWEN3_5,
    ),
    Family(
        "minicpmv4_6",
        "MiniCPM-V 4.6",
        (("openbmb/MiniCPM-V-4.6", "1.3B"), ("openbmb/MiniCPM-V-4.6-Thinking", "1.3B")),
        image_token="<|image_pad|>",
        parts={
            "vision": ("model.vision_tower",),
            "merger": ("model.merger",),
            "language": ("model.language_model", "lm_head"),
        },
        pixels="slices",
        packed=("pixel_values", "pixel_values_videos"),
        video=False,  # its processor takes video, but not the frame grids lab/video.py makes for Qwen
        tokens=_qwen_tokens(
            248044,
            _QWEN_BASE,
            _QWEN_TOOLS,
            _QWEN_THINK,
            extra_tokens=("<image>", "</image>", "<slice>", "</slice>", "<image_id>", "</image_id>"),
            tokenizer_class="Qwen3_5Tokenizer",
            attrs={
                "image_token": "<|image_pad|>",
                "video_token": "<|video_pad|>",
                "image_start_token": "<image>",
                "image_end_token": "</image>",
                "slice_start_token": "<slice>",
                "slice_end_token": "</slice>",
                "image_id_start_token": "<image_id>",
                "image_id_end_token": "</image_id>",
            },
        ),
        chat_template=chat_templates.MINICPMV4_6,
        tiny=tiny_recipes.MINICPMV4_6,
    ),
    Family(
        "internvl",
        "InternVL",
        (("OpenGVLab/InternVL3-1B-hf", "1B"), ("OpenGVLab/InternVL3-2B-hf", "2B"), ("OpenGVLab/InternVL3-8B-hf", "8B")),
        image_token="<IMG_CONTEXT>",
        parts=_PROJECTOR_PARTS,
        pixels="tiles",
        video=False,  # its processor takes video, but not the frame grids lab/video.py makes for Qwen
        tokens=_qwen_tokens(
            151643,
            _QWEN_BASE,
            _QWEN_TOOLS,
            extra_tokens=(
                "<img>",
                "</img>",
                "<IMG_CONTEXT>",
                "<quad>",
                "</quad>",
                "<ref>",
                "</ref>",
                "<box>",
                "</box>",
                "<video>",
            ),
            attrs={
                "start_image_token": "<img>",
                "end_image_token": "</img>",
                "context_image_token": "<IMG_CONTEXT>",
                "video_token": "<video>",
            },
        ),
        chat_template=chat_templates.INTERNVL,
        tiny=tiny_recipes.INTERNVL,
    ),
    Family(
        "gemma3",
        "Gemma 3",
        (("google/gemma-3-4b-it", "4B"), ("google/gemma-3-12b-it", "12B"), ("google/gemma-3-27b-it", "27B")),
        image_token="<image_soft_token>",
        parts=_PROJECTOR_PARTS,
        pixels="fixed",
        tokens=Tokens(
            "GemmaTokenizer",
            "sentencepiece",
            262145,
            {
                "<pad>": 0,
                "<eos>": 1,
                "<bos>": 2,
                "<unk>": 3,
                "<mask>": 4,
                "[multimodal]": 5,
                "<start_of_turn>": 105,
                "<end_of_turn>": 106,
                "<start_of_image>": 255999,
                "<end_of_image>": 256000,
                "<image_soft_token>": 262144,
            },
            bos="<bos>",
            eos="<eos>",
            pad="<pad>",
            unk="<unk>",
            stop=("<end_of_turn>", "<eos>"),
            extra={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"},
        ),
        chat_template=chat_templates.GEMMA3,
        tiny=tiny_recipes.GEMMA3,
    ),
    Family(
        "smolvlm",
        "SmolVLM",
        (
            ("HuggingFaceTB/SmolVLM2-256M-Video-Instruct", "256M"),
            ("HuggingFaceTB/SmolVLM2-500M-Video-Instruct", "500M"),
            ("HuggingFaceTB/SmolVLM2-2.2B-Instruct", "2.2B"),
        ),
        image_token="<image>",
        parts={
            "vision": ("model.vision_model",),
            "merger": ("model.connector",),
            "language": ("model.text_model", "lm_head"),
        },
        pixels="splits",
        tokens=Tokens(
            "GPT2Tokenizer",
            "bytelevel",
            49280,
            {
                "<|endoftext|>": 0,
                "<|im_start|>": 1,
                "<|im_end|>": 2,
                "<global-img>": 49152,
                **{f"<row_{r}_col_{c}>": 49152 + 6 * (r - 1) + c for r in range(1, 7) for c in range(1, 7)},
                "<fake_token_around_image>": 49189,
                "<image>": 49190,
                "<end_of_utterance>": 49279,
            },
            bos="<|im_start|>",
            eos="<end_of_utterance>",
            pad="<|im_end|>",
            unk="<|endoftext|>",
            stop=("<end_of_utterance>",),
            extra={
                "fake_image_token": "<fake_token_around_image>",
                "image_token": "<image>",
                "global_image_token": "<global-img>",
                "end_of_utterance_token": "<end_of_utterance>",
            },
        ),
        chat_template=chat_templates.SMOLVLM,
        tiny=tiny_recipes.SMOLVLM,
    ),
]

FAMILIES: dict[str, Family] = {family.name: family for family in _ENTRIES}
GENERIC = Family("other", "other", (), image_token="")


def family_name(config_or_model) -> str:
    """The family of a config, a model or a config dict: an entry's name, else ``"other"``."""
    config = getattr(config_or_model, "config", config_or_model)
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return model_type if model_type in FAMILIES else GENERIC.name


def get_family(name: str) -> Family:
    """The entry of ``name`` (a family name or a config's model_type); :data:`GENERIC` for others."""
    return FAMILIES.get(name, GENERIC)


def tiny_families() -> tuple[str, ...]:
    """Families with a tiny stand-in (all of them)."""
    return tuple(name for name, family in FAMILIES.items() if family.tiny is not None)


def check_family(name: str) -> Family:
    from lab.text import Msg, join

    if name not in FAMILIES:
        raise ConfigError(
            "Unknown model family {family!r}; choose one of {families}.",
            family=name,
            families=join(Msg(", "), list(FAMILIES)),
        )
    return FAMILIES[name]


def preset_models() -> list[tuple[str, str, str]]:
    """``(Hub id, size, family title)`` of every preset, family by family, in the table's order."""
    return [(hub_id, size, family.title) for family in _ENTRIES for hub_id, size in family.presets]


def picker_choices(names: list[str]) -> list[tuple[str, str]]:
    """``(label, name)`` for a model picker: a preset's label carries its size, "Qwen/Qwen2.5-VL-3B-Instruct (3B)"."""
    sizes = {hub_id: size for hub_id, size, _ in preset_models()}
    return [(f"{name} ({sizes[name]})" if name in sizes else name, name) for name in names]
