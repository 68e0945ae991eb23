"""GRPO's data: the prompts of a run, and sampled answers back into training tensors.

A record of our dataset format is a prompt (everything up to the last assistant turn) and a
reference answer (that turn), which the rewards may compare against (:mod:`lab.training.rewards`).
A prompt that cannot fit its answer into ``max_length`` is left out (or refused, per
``overlong``), as SFT does with an overlong sample. Sampled answers go back into a batch
through the SFT collator: the prompt's processor output followed by the answer's token ids,
with the answer's tokens as the labels::

    prompt     <|im_start|>user\n<|vision_start|><|image_pad|> x36 <|vision_end|>What is it?<|im_end|>\n
               <|im_start|>assistant\n
    answer     A  Ġcat  .  <|im_end|>          (the ids it was sampled as, and the token that ended it)
    labels     -100 ... -100                   A  Ġcat  .  <|im_end|>
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lab.conversation import split_prompt, to_hf_messages
from lab.errors import BadImageError, ConfigError, DatasetError
from lab.text import Msg

if TYPE_CHECKING:
    from lab.train_config import TrainConfig


@dataclass
class Prompt:
    """One question to answer: the conversation up to the answer, its reference answer, its images."""

    key: str
    messages: list[dict]
    reference: str
    images: list[str]
    text: str  # the chat template's text, ending with the assistant's turn opened

    @property
    def question(self) -> str:
        return str(self.messages[-1]["content"])


@dataclass
class Prompts:
    """The prompts a run trains on, how many were held out for validation, and what was left out and why."""

    train: list[Prompt]
    val_count: int
    dropped: list[tuple[str, Msg]] = field(default_factory=list)


def load_prompts(cfg: TrainConfig, processor: Any, log: Callable[[str], None] = print) -> Prompts:
    """The run's training prompts (the split, system prompt and identity samples as for SFT); a prompt whose
    tokens and ``max_new_tokens`` do not fit ``max_length`` is dropped or refused per ``overlong``."""
    from lab.training.data import load_splits, with_system

    train_records, val_records = load_splits(cfg)
    prompts, dropped = [], []
    for index, record in enumerate(train_records):
        key = str(record.get("id", f"#{index + 1}"))
        messages, reference = split_prompt(with_system(record["messages"], cfg.system))
        if not messages or messages[-1]["role"] != "user":
            dropped.append((key, Msg("no question to answer")))
            continue
        text = processor.apply_chat_template(to_hf_messages(messages), tokenize=False, add_generation_prompt=True)
        try:
            length = prompt_length(processor, text, record["images"]) + cfg.max_new_tokens
        except BadImageError as err:
            dropped.append((key, Msg("unreadable image: {err}", err=err)))
            continue
        if length > cfg.max_length:
            if cfg.overlong == "error":
                raise ConfigError(
                    "Sample {key} needs {length} tokens with max_new_tokens but max_length is "
                    "{max_length}; raise max_length, lower max_new_tokens or max_pixels, or set overlong "
                    "to drop.",
                    key=key,
                    length=length,
                    max_length=cfg.max_length,
                )
            dropped.append(
                (
                    key,
                    Msg(
                        "overlong: {length} tokens > max_length {max_length}", length=length, max_length=cfg.max_length
                    ),
                )
            )
            continue
        prompts.append(Prompt(key, messages, reference or "", list(record["images"]), text))
    if not prompts:
        first = Msg(" (first: sample {key}: {reason})", key=dropped[0][0], reason=dropped[0][1]) if dropped else Msg("")
        raise DatasetError(
            "No training samples are left out of {n_train_records}{first}.",
            n_train_records=len(train_records),
            first=first,
        )
    log(f"{len(prompts)} prompts, {cfg.num_generations} answers each; {len(dropped)} left out")
    return Prompts(prompts, len(val_records), dropped)


def prompt_length(processor: Any, text: str, images: list[str]) -> int:
    """Tokens of a prompt with its images, counted from the image sizes without decoding them."""
    from lab.images import image_size
    from lab.training.encode import image_token_counts

    ids = processor.tokenizer(text, add_special_tokens=False)["input_ids"]
    if not images or not hasattr(processor, "_get_num_multimodal_tokens"):
        return len(ids)
    counts = image_token_counts(processor, [image_size(path) for path in images])
    return len(ids) + sum(counts) - len(counts)  # each placeholder becomes its image's tokens


def answer_ids(answer: Any) -> list[int]:
    """The tokens an answer was sampled as, with the end-of-turn token that closed it: stopping is learned too."""
    return list(answer.token_ids) + ([answer.end_token_id] if answer.end_token_id is not None else [])


def build_batch(processor: Any, prompts: list[Prompt], images: list[list], answers: list, collator: Any) -> dict:
    """The collated batch of every prompt followed by each of its answers; the answers' tokens are the labels.

    The answer is appended as the token ids it was sampled as: decoding and encoding it again
    could give other tokens than the ones whose probabilities were sampled.
    """
    import torch

    from lab.training.collator import _is_sequence, _per_token
    from lab.training.encode import IGNORE

    group = len(answers) // len(prompts)
    items = []
    for i, prompt in enumerate(prompts):
        out = processor(text=[prompt.text], images=images[i] or None, return_tensors="pt")
        n = out["input_ids"].shape[1]
        base = {k: (v[0] if _is_sequence(v, n) else v) for k, v in out.items() if v is not None}
        for answer in answers[i * group : (i + 1) * group]:
            ids = torch.tensor(answer_ids(answer), dtype=torch.long)
            item = {}
            for key, value in base.items():
                if not _per_token(base, key):
                    item[key] = value
                    continue
                extra = ids if key == "input_ids" else torch.full_like(ids, 1 if key == "attention_mask" else 0)
                item[key] = torch.cat([value, extra.to(value.dtype)])
            item["labels"] = torch.cat([torch.full((n,), IGNORE, dtype=torch.long), ids])
            items.append(item)
    return collator(items)


def to_device(batch: dict, device: Any) -> dict:
    return {k: v.to(device, non_blocking=True) if hasattr(v, "to") else v for k, v in batch.items()}
