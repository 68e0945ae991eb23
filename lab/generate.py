"""Generation with the loaded model: batched for evaluation and labeling, streamed for chat.

Batches are left-padded so every prompt ends where generation starts; with greedy
decoding a batch gives the same answers as one prompt at a time (a test checks it on
every family of :mod:`lab.families`: transformers builds the multimodal rope positions
from the attention mask, so the padding does not shift them).

Conversations are ms-swift messages (string contents with ``<image>`` placeholders, no
final assistant turn); ``images`` holds each conversation's PIL images in order.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from lab.conversation import to_hf_messages


@dataclass
class Generation:
    """One answer: its text, token counts, the seconds it took (a batch's time shared equally)."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    token_ids: list[int] = field(default_factory=list)


def _sampling_kwargs(temperature: float, top_p: float) -> dict[str, Any]:
    if temperature and temperature > 0:
        return {"do_sample": True, "temperature": float(temperature), "top_p": float(top_p)}
    # Greedy; None overrides a model's generation_config sampling defaults (Qwen ships top_k etc.).
    return {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}


def prepare_inputs(loaded: Any, conversations: list[list[dict]], images: list[list[Any]]) -> Any:
    """Tokenize prompts (ending with the assistant's turn opened) and their images, left-padded."""
    processor = loaded.processor
    texts = [
        processor.apply_chat_template(to_hf_messages(conv), tokenize=False, add_generation_prompt=True)
        for conv in conversations
    ]
    # One list of pictures per conversation: Gemma 3 and SmolVLM need to know which prompt each belongs to.
    nested = [list(per_conv) for per_conv in images] if any(images) else None
    # padding_side per call: the training collator shares this processor and pads on the right. The chat
    # template already wrote any begin-of-text token (Gemma's <bos>), so the tokenizer adds none.
    inputs = processor(text=texts, images=nested, return_tensors="pt", padding=True, padding_side="left",
                       add_special_tokens=False)
    return inputs.to(loaded.model.device)


def _generate_kwargs(loaded: Any, max_new_tokens: int, min_new_tokens: int, temperature: float, top_p: float) -> dict:
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
    return kwargs


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
) -> list[Generation]:
    """Answer each conversation with its images in one batch (greedy when ``temperature`` is 0)."""
    import torch

    _ready_for_inference(loaded)
    start = time.perf_counter()
    inputs = prepare_inputs(loaded, conversations, images)
    with torch.inference_mode():
        output = loaded.model.generate(
            **inputs, **_generate_kwargs(loaded, max_new_tokens, min_new_tokens, temperature, top_p)
        )
    prompt_len = inputs["input_ids"].shape[1]
    new_tokens = output[:, prompt_len:].tolist()
    seconds = (time.perf_counter() - start) / max(len(conversations), 1)
    tokenizer = loaded.processor.tokenizer
    results = []
    for row, mask in zip(new_tokens, inputs["attention_mask"]):
        completion = _strip_after_eos(row, loaded)
        text = tokenizer.decode(completion, skip_special_tokens=True)
        results.append(Generation(text.strip(), int(mask.sum()), len(completion), seconds, completion))
    return results


def _strip_after_eos(ids: list[int], loaded: Any) -> list[int]:
    eos = loaded.model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos]) - {None}
    pad = loaded.processor.tokenizer.pad_token_id
    for i, token in enumerate(ids):
        if token in eos_ids or token == pad:
            return ids[:i]
    return ids


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
