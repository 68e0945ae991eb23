"""Generation with the loaded model: batched for evaluation and labeling, streamed for chat.

Batches are left-padded so every prompt ends where generation starts; with greedy
decoding a batch gives the same answers as one prompt at a time (a test checks it).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Iterator

from lab.conversation import to_hf_messages


@dataclass
class Generation:
    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float


def _sampling_kwargs(temperature: float, top_p: float) -> dict[str, Any]:
    if temperature and temperature > 0:
        return {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p)}
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def prepare_inputs(loaded: Any, conversations: list[list[dict]], images: list[list[Any]]) -> Any:
    """Tokenize prompts (ending with the assistant's turn opened) and their images, left-padded."""
    processor = loaded.processor
    texts = [
        processor.apply_chat_template(to_hf_messages(conv), tokenize=False, add_generation_prompt=True)
        for conv in conversations
    ]
    flat_images = [image for per_conv in images for image in per_conv]
    processor.tokenizer.padding_side = "left"
    inputs = processor(text=texts, images=flat_images or None, return_tensors="pt", padding=True)
    return inputs.to(loaded.model.device)


def generate_batch(
    loaded: Any,
    conversations: list[list[dict]],
    images: list[list[Any]],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
) -> list[Generation]:
    """Answer each conversation (ms-swift messages, no final assistant turn) with its images."""
    import torch

    start = time.perf_counter()
    inputs = prepare_inputs(loaded, conversations, images)
    tokenizer = loaded.processor.tokenizer
    with torch.inference_mode():
        output = loaded.model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            **_sampling_kwargs(temperature, top_p),
        )
    prompt_len = inputs["input_ids"].shape[1]
    new_tokens = output[:, prompt_len:]
    seconds = (time.perf_counter() - start) / max(len(conversations), 1)
    results = []
    for row, mask in zip(new_tokens, inputs["attention_mask"]):
        completion = _strip_after_eos(row.tolist(), loaded)
        text = tokenizer.decode(completion, skip_special_tokens=True)
        results.append(Generation(text.strip(), int(mask.sum()), len(completion), seconds))
    return results


def _strip_after_eos(ids: list[int], loaded: Any) -> list[int]:
    eos = loaded.model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    pad = loaded.processor.tokenizer.pad_token_id
    for i, token in enumerate(ids):
        if token in eos_ids or token == pad:
            return ids[:i]
    return ids


def stream_generate(
    loaded: Any,
    conversation: list[dict],
    images: list[Any],
    *,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    stop: threading.Event | None = None,
) -> Iterator[str]:
    """Yield the answer's text as it grows; setting ``stop`` ends generation after the next token."""
    from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

    class _StopOnEvent(StoppingCriteria):
        def __call__(self, input_ids, scores, **kwargs):
            return bool(stop is not None and stop.is_set())

    inputs = prepare_inputs(loaded, [conversation], [images])
    tokenizer = loaded.processor.tokenizer
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
    kwargs = dict(
        **inputs,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        streamer=streamer,
        stopping_criteria=StoppingCriteriaList([_StopOnEvent()]),
        **_sampling_kwargs(temperature, top_p),
    )
    errors: list[BaseException] = []

    def run() -> None:
        import torch

        try:
            with torch.inference_mode():
                loaded.model.generate(**kwargs)
        except BaseException as err:  # re-raised in the caller's thread below
            errors.append(err)
            streamer.end()

    worker = threading.Thread(target=run, name="chat-generate", daemon=True)
    worker.start()
    text = ""
    for piece in streamer:
        text += piece
        yield text
    worker.join()
    if errors:
        raise errors[0]
