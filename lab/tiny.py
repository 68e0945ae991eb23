"""Tiny random vision-language models, built offline in seconds.

Tests, classroom demos without a download and the first run of the app all need a model
that loads through the same code path as ``Qwen/Qwen2.5-VL-3B-Instruct``. A tiny random
model of the real architecture (vision tower, merger, language model, with the real
module names) does that: LoRA targets, the chat template, image placeholders, label
masking and generation all behave as with the real weights; only the answers are noise.
Every family of :mod:`lab.families` has one; its recipe is in :mod:`lab.tiny_recipes`.

The tokenizer is the family's real tokenizer class with a BPE vocabulary trained on the spot
(any text round-trips, Latin and CJK alike), padded to the real vocabulary's size so that
every special token has its real id, with the family's pad/eos and chat template. Other
tools that hard-code an id (ms-swift's Qwen2-VL template names ``<|image_pad|>`` 151655) see
the tokens they expect.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from lab import paths
from lab.errors import ConfigError
from lab.families import check_family

MARKER_FILE = "lab_tiny.json"
VOCAB_SIZE = 4096  # the trained byte-level vocabulary; fillers pad it to the real tokenizer's size


_CORPUS = """\
You are a helpful assistant.
Describe the image in one sentence.
What is shown in this picture? Answer in JSON with the keys "label" and "reason".
The photo shows a green circuit board with resistors, capacitors and a small chip.
A red car is parked next to a white building under a blue sky.
The screenshot shows a login page with a username field, a password field and a button.
Two cats are sleeping on a brown sofa near the window.
The chart compares the monthly sales of three products in 2024.
There is a handwritten note on the table: "Meeting at 3 pm, room 204."
The label on the bottle reads: Keep refrigerated after opening.
Count the number of people in the image and list what each one is doing.
Is there any text in the image? If so, transcribe it exactly.
The answer is yes. The answer is no. I am not sure.
The quick brown fox jumps over the lazy dog.
Fine-tuning a vision-language model needs images, prompts and good answers.
Training loss: 1.234, learning rate: 0.0002, epoch 3 of 10, step 150.
{"label": "cat", "confidence": 0.92, "objects": ["sofa", "window", "cushion"]}
Error: the file was not found. Please check the path and try again.
The dog runs across the grass with a yellow ball in its mouth.
A close-up of a flower with five white petals and a yellow center.
The diagram shows how data flows from the camera to the model and back.
This component is a capacitor; it stores electric charge.
Please answer briefly and in plain language.
你是一个乐于助人的助手。
请用一句话描述这张图片。
图片中显示的是什么？请用JSON格式回答，包含"标签"和"理由"两个字段。
这张照片展示了一块绿色的电路板，上面有电阻、电容和一个小芯片。
一辆红色的汽车停在一栋白色建筑旁边，天空是蓝色的。
截图显示了一个登录页面，有用户名输入框、密码输入框和一个按钮。
两只猫在窗边的棕色沙发上睡觉。
这张图表比较了三种产品在二零二四年的月销售额。
桌子上有一张手写的便条："下午三点在二零四会议室开会。"
瓶子上的标签写着：开封后请冷藏。
请数一数图片中有几个人，并说明每个人在做什么。
图片中有文字吗？如果有，请准确地抄写下来。
答案是肯定的。答案是否定的。我不确定。
微调视觉语言模型需要图片、提示词和高质量的答案。
本项目使用大模型接口生成数据，并用这些数据微调千问模型。
训练损失为一点二三，学习率为零点零零零二，第三轮，共十轮。
错误：找不到文件，请检查路径后重试。
小狗叼着一个黄色的球跑过草地。
一朵花的特写，有五片白色的花瓣和黄色的花蕊。
示意图展示了数据从相机流向模型再返回的过程。
这个元件是电容，用来储存电荷。
请简短地用通俗的语言回答。
界面上有一个搜索框、一个菜单按钮和一列商品图片，用户可以点击图片查看详情。
老师在课堂上用笔记本电脑演示如何给图片打标签并训练模型。
天气晴朗，公园里有很多人在散步、跑步和放风筝。
"""


# Common Hanzi and UI words, one pre-token each (space separated), so that Chinese text gets
# whole-character tokens as with the real vocabulary instead of three bytes per character.
_COMMON_HANZI = (
    "的一是不了人我在有他这中大来上国个到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可她里后小么"
    "心多天而能好都然没日于起还发成事只作当想看文无开手十用主行方又如前所本见经头面公同三已老从动两长知民样现分"
    "将外但身些与高意进把法此实回二理美点月明其种声全工己话儿者向情部正名定女问力机给等几很业最间新什打便位因重"
    "被走电四第门相次东政海口使教西再平真听世气信北少关并内加化由却代军产入先山五太水万市眼体别处总才场师书比住"
    "员九笑性通目华报立马命张活难神数件安表原车白应路期叫死常提感金何更反合放做系计或司利受光王果亲界及今京务制"
    "解各任至清物台象记边共风战干接它许八特觉望直服毛林题建南度统色字请交爱让认算论百吃义科怎元社术结六功指思非"
    "流每青管夫连远资队跟带花快条院变联言权往展该领传近留红治决周保达办运半候七必城父强步完深区即求品士转量空众"
    "技轻程告江语英基满式息写呢识极令黄德收脸钱倒未持取设始版双历越史商千片容研像找友孩站广改议形委早房音火际则"
    "首单据导影失拿网香似专石若弟谁校读志飞观争究包组造落视济喜离虽坏兴突医考照怕答图按钮输框签本颜绿蓝黑灰柱状"
    "饼折线登录密码搜索菜确认消返页截阻芯元"
)


# The sample's box and clip questions: their placeholders and phrases would take merges from the
# caption words the demo learns, and the demo's short LoRA runs then learn noticeably slower.
_NOT_IN_CORPUS = ("data_grounding.jsonl", "data_video.jsonl")


def corpus_texts(sample_dir: Path | None = None) -> list[str]:
    """The tokenizer's training texts: the built-in corpus plus every text in ``sample_dir/*.jsonl``."""
    texts = _CORPUS.splitlines() + [" ".join(_COMMON_HANZI)]
    sample_dir = paths.SAMPLE_DATASET if sample_dir is None else Path(sample_dir)
    for jsonl in sorted(sample_dir.glob("*.jsonl")):
        if jsonl.name in _NOT_IN_CORPUS:
            continue
        for line in jsonl.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                texts.extend(_strings_in(json.loads(line)))
            except json.JSONDecodeError:
                continue  # a half-written line of a dataset being generated is no reason to fail
    return texts


def _strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return [s for item in value for s in _strings_in(item)]
    return []


def train_tokenizer(family: str, texts: list[str], vocab_size: int = VOCAB_SIZE):
    """A tokenizer of ``family``'s real class trained on ``texts``, with the real special-token ids.

    A BPE vocabulary of ``vocab_size`` is trained through the class's own normalizer and
    pre-tokenizer (so the saved tokenizer loads back unchanged); its tokens take the lowest
    ids the special tokens leave free, and fillers that no text ever produces pad it to the
    real tokenizer's size, as the real vocabulary fills those ids. ``<|image_pad|>`` is then
    151655 as in Qwen2-VL, and tools that hard-code such ids see the tokens they expect.
    """
    return _tokenizer_and_used_ids(family, texts, vocab_size)[0]


def _tokenizer_and_used_ids(family: str, texts: list[str], vocab_size: int = VOCAB_SIZE):
    """:func:`train_tokenizer`, and the ids of its tokens that are not fillers."""
    import transformers
    from tokenizers import AddedToken

    family_entry = check_family(family)
    spec = family_entry.tokens
    cls = getattr(transformers, spec.tokenizer_class)
    names = dict(bos_token=spec.bos, eos_token=spec.eos, pad_token=spec.pad, unk_token=spec.unk)
    trained = _train_bpe(cls(**names).backend_tokenizer, spec, texts, vocab_size)
    model = json.loads(trained.to_str())["model"]
    merges = [tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    vocab, used = _layout(model["vocab"], spec)
    tokenizer = cls(vocab=vocab, merges=merges, extra_special_tokens=dict(spec.extra), **names)
    ordered = sorted(spec.special, key=spec.special.get)
    tokenizer.add_tokens([AddedToken(t, special=t not in spec.normal, normalized=False) for t in ordered])
    tokenizer.chat_template = family_entry.chat_template
    return tokenizer, used


def _train_bpe(pipeline, spec, texts: list[str], vocab_size: int):
    """A BPE model trained on ``texts`` through ``pipeline``'s normalizer and pre-tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    byte_fallback = spec.style == "sentencepiece"
    bpe = Tokenizer(models.BPE(unk_token=spec.unk if byte_fallback else None, byte_fallback=byte_fallback))
    if pipeline.normalizer is not None:
        bpe.normalizer = pipeline.normalizer
    if pipeline.pre_tokenizer is not None:
        bpe.pre_tokenizer = pipeline.pre_tokenizer
    alphabet = [] if byte_fallback else pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, initial_alphabet=alphabet, show_progress=False
    )
    bpe.train_from_iterator(texts, trainer)
    return bpe


def _layout(trained: dict[str, int], spec) -> tuple[dict[str, int], set[int]]:
    """Special tokens at their real ids, the trained tokens at the free ids from 0, fillers up to ``spec.size``.

    A sentencepiece-style vocabulary also gets the 256 byte tokens (``<0x41>``) its byte
    fallback spells unknown characters with. Returns the vocabulary and the ids that are not fillers.
    """
    regular = sorted(trained, key=trained.get)
    if spec.style == "sentencepiece":
        regular = [f"<0x{b:02X}>" for b in range(256)] + regular
    regular = [t for t in regular if t not in spec.special]
    taken = set(spec.special.values())
    free = (i for i in range(spec.size) if i not in taken)
    vocab = dict(spec.special)
    for token, index in zip(regular, free):
        vocab[token] = index
    used = set(vocab.values())
    for index in free:
        vocab[f"<|unused_{index}|>"] = index  # no text produces it: the BPE has no merge that makes it
    return vocab, used


def special_ids(tokenizer, family: str) -> dict[str, int]:
    """``{special token: id}`` of ``family`` in ``tokenizer``."""
    return {t: tokenizer.convert_tokens_to_ids(t) for t in check_family(family).tokens.special}


def model_config(family: str, tokenizer):
    """A tiny config of ``family``'s real config class, its token ids taken from ``tokenizer``."""
    recipe = check_family(family).tiny
    return recipe.config(special_ids(tokenizer, family), max(recipe.vocab_size, len(tokenizer)))


def make_processor(family: str, tokenizer):
    """The family's processor with small image sizes: a 224x224 image becomes 16-80 image tokens."""
    entry = check_family(family)
    return entry.tiny.processor(tokenizer, entry.chat_template)


def build_tiny_model(family: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Build a tiny random ``family`` model folder at ``out_dir`` with no network; returns its path.

    The folder loads with ``AutoModelForImageTextToText`` / ``AutoProcessor`` like a real
    checkpoint. It is written next to ``out_dir`` and renamed into place, so a crash never
    leaves half a model; an older tiny model at ``out_dir`` is replaced, anything else is
    refused. The same family, seed and corpus give the same weights and tokenizer.
    """
    check_family(family)
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and not (out_dir.is_dir() and (is_tiny_model(out_dir) or not any(out_dir.iterdir()))):
        raise ConfigError(
            "{out_dir} already exists and is not a tiny model folder; choose an empty or new folder.", out_dir=out_dir
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        _write_model(family, staging, seed)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def _write_model(family: str, folder: Path, seed: int) -> None:
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    tokenizer, used = _tokenizer_and_used_ids(family, corpus_texts())
    config = model_config(family, tokenizer)
    # fork_rng: building a model must not change the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForImageTextToText.from_config(config, dtype=torch.float32)
        randomize = check_family(family).tiny.randomize
        if randomize is not None:
            randomize(model)
    _quiet_unused_rows(model, used)
    spec = check_family(family).tokens
    stop = tokenizer.convert_tokens_to_ids(list(spec.stop or (spec.eos,)))
    pad = tokenizer.convert_tokens_to_ids(spec.pad)
    # Greedy by default: a random model sampled at temperature 1 would make tests flaky.
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids(spec.bos or spec.pad),
        pad_token_id=pad,
        eos_token_id=stop,
        do_sample=False,
    )
    from transformers.utils import logging as hf_logging

    bar_was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a "Writing model shards" bar for a tiny file is noise
    try:
        model.save_pretrained(folder)
    finally:
        if bar_was_on:
            hf_logging.enable_progress_bar()
    make_processor(family, tokenizer).save_pretrained(folder)
    marker = {
        "tiny_random_model": True,
        "family": family,
        "seed": seed,
        "num_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "note": "A tiny randomly initialised model for offline tests and demos: its answers are noise.",
    }
    (folder / MARKER_FILE).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _quiet_unused_rows(model, used: set[int]) -> None:
    """Zero the embedding rows of the fillers and of the ids past the tokenizer (all but ``used``).

    Their logits are then exactly 0 while the trained tokens' are random, so a random model
    answers with real words (the largest of a few thousand random logits is above 0), not
    with filler names; the real models' rows past their tokenizer are near zero too.
    """
    import torch

    rows = model.get_input_embeddings().weight.shape[0]
    unused = torch.ones(rows, dtype=torch.bool)
    unused[sorted(used)] = False
    with torch.no_grad():
        for layer in {id(m): m for m in (model.get_input_embeddings(), model.get_output_embeddings())}.values():
            layer.weight[unused] = 0


def tiny_model_info(path: str | Path) -> dict | None:
    """The marker of a tiny random model folder (family, seed, num_parameters, vocab_size), else None."""
    marker = Path(path) / MARKER_FILE
    try:
        info = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("tiny_random_model") is True else None


def is_tiny_model(path: str | Path) -> bool:
    """True when ``path`` is a tiny random model built by :func:`build_tiny_model`."""
    return tiny_model_info(path) is not None


def ensure_demo_model(family: str = "qwen2_5_vl") -> Path:
    """The offline demo model of ``family`` under the workspace, built on first use."""
    target = paths.demo_model_dir(family)
    if is_tiny_model(target) and (target / "config.json").is_file():
        return target
    try:
        return build_tiny_model(family, target)
    except OSError:
        # Another process may have renamed its finished copy into place first.
        if is_tiny_model(target):
            return target
        raise
