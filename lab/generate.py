"""Generation with the loaded model: batched for evaluation and labeling, streamed for chat.

Batches are left-padded so every prompt ends where generation starts; with greedy
decoding a batch gives the same answers as one prompt at a time (a test checks it on
every family of :mod:`lab.families`: transformers builds the multimodal rope positions
from the attention mask, so the padding does not shift them).

Conversations are ms-swift messages (string contents with ``<image>`` placeholders, no
final assistant turn); ``images`` holds each conversation's PIL images in order, ``videos``
its :class:`lab.video.Video` s (read within a budget) for ``<video>`` placeholders.
An answer keeps Qwen's grounding tokens (``<|box_start|>`` ...), so its boxes can be read back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Any

from lab.conversation import to_hf_messages


@dataclass
class Generation:
    """One answer: its text, token counts, the seconds it took (a batch's time shared equally)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    token_ids: list[int] = field(default_factory=list)
    end_token_id: int | None = None  # the end-of-sequence token that ended it; None when cut at max_new_tokens


def _sampling_kwargs(temperature: float, top_p: float) -> dict[str, Any]:
    if temperature and temperature > 0:
        return {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p)}
    # Greedy; None overrides a model's generation_config sampling defaults (Qwen ships top_k etc.).
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def prepare_inputs(
    loaded: Any, conversations: list[list[dict]], images: list[list[Any]], videos: list[list[Any]] | None = None
) -> Any:
    """Tokenize prompts (ending with the assistant's turn opened) and their images and videos, left-padded."""
    from lab.video import processor_videos

    processor = loaded.processor
    texts = [
        processor.apply_chat_template(to_hf_messages(conv), tokenize=False, add_generation_prompt=True)
        for conv in conversations
    ]
    # One list of pictures per conversation: Gemma 3 and SmolVLM need to know which prompt each belongs to.
    nested = [list(per_conv) for per_conv in images] if any(images) else None
    media = processor_videos(processor, [video for per_conv in videos or [] for video in per_conv])
    # padding_side per call: the training collator shares this processor and pads on the right. The chat
    # template already wrote any begin-of-text token (Gemma's <bos>), so the tokenizer adds none.
    inputs = processor(
        text=texts,
        images=nested,
        return_tensors="pt",
        padding=True,
        padding_side="left",
        add_special_tokens=False,
        **media,
    )
    return inputs.to(loaded.model.device)


def _generate_kwargs(
    loaded: Any, max_new_tokens: int, min_new_tokens: int, temperature: float, top_p: float, plain: bool = False
) -> dict:
    tokenizer = loaded.processor.tokenizer
    kwargs = dict(
        max_new_tokens=int(max_new_tokens),
        pad_token_id=tokenizer.pad_token_id,
        # A run trained with gradient checkpointing leaves use_cache off in the config.
        use_cache=True,
        **_sampling_kwargs(temperature, top_p),
    )
    if min_new_tokens:
        kwargs["min_new_tokens"] = int(min_new_tokens)
    if plain:
        # Sample from the model's distribution at this temperature and nothing else: transformers adds top_k 50
        # unless told otherwise, and a model's generation_config may bring its own top_k or repetition penalty.
        # Placeholders of image features are left out: an answer holding one could not be fed back to the model.
        kwargs.update(top_k=0, repetition_penalty=1.0, suppress_tokens=feature_placeholders(loaded.processor))
    return kwargs


@contextmanager
def _inference(loaded: Any):
    """No gradients, and on a GPU the model's half precision for every matrix product.

    A QLoRA model keeps its LoRA weights in float32 next to bfloat16 activations; training
    runs under autocast, and so must answers (evaluation while training, chat and Evaluate
    afterwards), or PEFT's layers meet mixed dtypes and fail.
    """
    import torch

    model = loaded.model
    first = next(model.parameters(), None)
    dtype = getattr(loaded, "dtype", None) or getattr(model, "dtype", None) or getattr(first, "dtype", None)
    device = getattr(loaded, "device", None) or getattr(model, "device", None) or getattr(first, "device", "")
    half = str(device).startswith("cuda") and dtype in (torch.bfloat16, torch.float16)
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype) if half else nullcontext():
        yield


def feature_placeholders(processor: Any) -> list[int]:
    """Ids of the tokens that stand for image or video features (``<|image_pad|>``, ``<|video_pad|>``)."""
    ids = [getattr(processor, name, None) for name in ("image_token_id", "video_token_id")]
    return [int(i) for i in ids if i is not None]


def _ready_for_inference(loaded: Any) -> None:
    # Training leaves the model in train mode, where LoRA dropout would make answers random.
    if loaded.model.training:
        loaded.model.eval()


def generate_batch(
    loaded: Any,
    conversations: list[list[dict]],
    images: list[list[Any]],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
    plain: bool = False,
    videos: list[list[Any]] | None = None,
) -> list[Generation]:
    """Answer each conversation with its images (and videos) in one batch (greedy when ``temperature`` is 0).

    ``plain`` samples from the model's own distribution at ``temperature`` (and ``top_p``), with none of the
    top-k or repetition-penalty defaults of transformers or the model: GRPO scores answers by that distribution.
    """
    _ready_for_inference(loaded)
    start = time.perf_counter()
    inputs = prepare_inputs(loaded, conversations, images, videos)
    with _inference(loaded):
        output = loaded.model.generate(
            **inputs, **_generate_kwargs(loaded, max_new_tokens, min_new_tokens, temperature, top_p, plain)
        )
    prompt_len = inputs["input_ids"].shape[1]
    new_tokens = output[:, prompt_len:].tolist()
    seconds = (time.perf_counter() - start) / max(len(conversations), 1)
    tokenizer = loaded.processor.tokenizer
    results = []
    for row, mask in zip(new_tokens, inputs["attention_mask"]):
        completion, end = _split_at_eos(row, loaded)
        text = answer_text(tokenizer, completion)
        results.append(Generation(text.strip(), int(mask.sum()), len(completion), seconds, completion, end))
    return results


def answer_text(tokenizer: Any, ids: list[int]) -> str:
    """The text of generated ``ids`` without special tokens, except Qwen's grounding tokens."""
    from lab.grounding import BOX_TOKENS

    special = {i: t.content for i, t in tokenizer.added_tokens_decoder.items() if t.special}
    special.update({i: "" for i in tokenizer.all_special_ids if i not in special})
    kept = [i for i in ids if i not in special or special[i] in BOX_TOKENS]
    return tokenizer.decode(kept, skip_special_tokens=False)


def _split_at_eos(ids: list[int], loaded: Any) -> tuple[list[int], int | None]:
    """The answer's tokens before the end of sequence, and the token that ended it (None: none did)."""
    eos = loaded.model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    pad = loaded.processor.tokenizer.pad_token_id
    for i, token in enumerate(ids):
        if token in eos_ids or token == pad:
            return ids[:i], token
    return ids, None


def _stop_on_events(*events: threading.Event | None):
    """A stopping criterion that ends generation once any of ``events`` is set."""
    from transformers import StoppingCriteria

    class StopOnEvents(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return any(e is not None and e.is_set() for e in events)

    return StopOnEvents()


def stream_generate(
    loaded: Any,
    conversation: list[dict],
    images: list[Any],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    min_new_tokens: int = 0,
    stop: threading.Event | None = None,
) -> Iterator[str]:
    """Yield the answer's text as it grows; ``stop`` (or closing the iterator) ends it after the next token.

    Generation runs in a worker thread; the iterator only returns once that thread is done,
    so the caller may release the model as soon as the loop ends.
    """
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    halt = threading.Event()
    _ready_for_inference(loaded)
    inputs = prepare_inputs(loaded, [conversation], [images])
    streamer = TextIteratorStreamer(loaded.processor.tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(
        **inputs,
        **_generate_kwargs(loaded, max_new_tokens, min_new_tokens, temperature, top_p),
        streamer=streamer,
        stopping_criteria=StoppingCriteriaList([_stop_on_events(halt, stop)]),
    )
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with _inference(loaded):
                loaded.model.generate(**kwargs)
        except BaseException as err:  # re-raised in the caller's thread below
            errors.append(err)
            streamer.end()

    worker = threading.Thread(target=run, name="chat-generate", daemon=True)
    worker.start()
    text = ""
    try:
        for piece in streamer:
            text += piece
            yield text
    finally:
        # Reached on normal end and when the consumer goes away (a closed browser tab).
        halt.set()
        worker.join()
    if errors:
        raise errors[0]
