"""Evaluation and chat speed on one GPU: batched evaluation against one sample at a time.

    python bench/eval.py                         # Qwen2.5-VL-3B architecture on the GPU
    python bench/eval.py --tiny                  # the tiny model on the CPU: a smoke test of this script
    python bench/eval.py --batches 8 32 --samples 64 --new-tokens 64

The model is Qwen2.5-VL-3B-Instruct's architecture (its config.json values, see
``bench/train.py``) with random bf16 weights, so nothing is downloaded; the tokenizer is
the lab's tiny BPE, which changes no cost of the model. Every sample is one of the
bundled sample pictures scaled to 448x448 (256 image tokens) with one of three prompts
of different lengths, so batches are really padded.

A random model never says it is done, so every answer is exactly ``--new-tokens`` long
(min_new_tokens = max_new_tokens): both ways generate the same number of tokens.

- one at a time: :func:`lab.generate.generate_batch` on one sample per call, which is what
  the seeds' evaluation and inference scripts do (processor + ``generate`` per image);
- batched: the same function on ``batch`` left-padded samples per call, as
  :func:`lab.evaluation.runner.run_evaluation` does;
- chat: time to first token (``max_new_tokens=1``: image encoding + prefill + one step),
  decode speed (tokens after the first over the time they took), and the time to the
  first text the chat path (:func:`lab.generate.stream_generate`) hands to the page.

Prints one JSON object (and writes it to ``--out`` when given).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

IMAGE_SIDE = 448
PROMPTS = [
    "<image>Describe this UI component in one sentence.",
    "<image>What kind of component is this, which colours does it use, and what would a user do with it?",
    "<image>List every visible element of this screenshot with its colour, its position and its label, "
    "then say in one sentence what the whole component is for and who would use it.",
]


def build(tiny: bool):
    """(loaded model, device) for the 3B architecture on the GPU, or the tiny model on the CPU."""
    import torch

    from lab.models import LoadedModel, load_model

    if tiny:
        from lab.tiny import ensure_demo_model

        return load_model(str(ensure_demo_model()), device="cpu")
    from train import build_model, make_processor  # bench/train.py: the 3B config and a 448x448 processor

    processor = make_processor()
    model = build_model("3b", processor).eval()
    return LoadedModel(
        model=model,
        processor=processor,
        family="qwen2_5_vl",
        name="Qwen2.5-VL-3B (random)",
        device="cuda",
        dtype=torch.bfloat16,
        quantization=None,
        is_tiny=False,
    )


def samples(n: int):
    """``n`` (conversation, images) pairs over the bundled sample pictures."""
    from lab.images import open_image

    pictures = sorted((ROOT / "data" / "sample" / "images").glob("*.png"))
    out = []
    for i in range(n):
        image = open_image(pictures[i % len(pictures)]).resize((IMAGE_SIDE, IMAGE_SIDE))
        out.append(([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], [image]))
    return out


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def generation_speed(loaded, data, batch: int, new_tokens: int) -> dict:
    """Samples/s and generated tokens/s answering ``data`` ``batch`` samples per call."""
    import torch

    from lab.generate import generate_batch

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    _sync()
    start = time.perf_counter()
    tokens = 0
    for first in range(0, len(data), batch):
        chunk = data[first : first + batch]
        answers = generate_batch(
            loaded, [c for c, _ in chunk], [i for _, i in chunk], max_new_tokens=new_tokens, min_new_tokens=new_tokens
        )
        tokens += sum(a.completion_tokens for a in answers)
    _sync()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    return {
        "batch": batch,
        "samples": len(data),
        "seconds": round(seconds, 2),
        "samples_per_s": round(len(data) / seconds, 3),
        "tokens_per_s": round(tokens / seconds, 1),
        "peak_gib": round(peak, 2) if peak else None,
    }


def chat_speed(loaded, data, new_tokens: int, repeats: int) -> dict:
    """Time to first token, decode tokens/s and time to the first streamed text, medians over ``repeats``."""
    from lab.generate import generate_batch, stream_generate

    first_token, full, first_text = [], [], []
    for conversation, images in data[:repeats]:
        for limit, into in ((1, first_token), (new_tokens, full)):
            _sync()
            start = time.perf_counter()
            generate_batch(loaded, [conversation], [images], max_new_tokens=limit, min_new_tokens=limit)
            _sync()
            into.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in stream_generate(loaded, conversation, images, max_new_tokens=new_tokens, min_new_tokens=new_tokens):
            first_text.append(time.perf_counter() - start)
            break
    ttft, total = statistics.median(first_token), statistics.median(full)
    return {
        "ttft_s": round(ttft, 3),
        "decode_tokens_per_s": round((new_tokens - 1) / (total - ttft), 1),
        "answer_s": round(total, 2),
        "new_tokens": new_tokens,
        "first_streamed_text_s": round(statistics.median(first_text), 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU (a quick check of the script)")
    parser.add_argument("--samples", type=int, default=64, help="samples per batched measurement")
    parser.add_argument("--single", type=int, default=16, help="samples for the one-at-a-time measurement")
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument("--new-tokens", type=int, default=64, help="tokens per answer in evaluation")
    parser.add_argument("--chat-tokens", type=int, default=128, help="tokens per chat answer")
    parser.add_argument("--repeats", type=int, default=3, help="chat measurements (median)")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    args = parser.parse_args(argv)

    import torch
    import transformers

    if not args.tiny and not torch.cuda.is_available():
        print("bench/eval.py needs a CUDA GPU (or --tiny for the CPU smoke test).", file=sys.stderr)
        return 2
    loaded = build(args.tiny)
    data = samples(max(args.samples, args.single, args.repeats))
    generation_speed(loaded, data[:2], 2, 4)  # warm-up: kernels, cuBLAS handles, allocator
    report = {
        "device": torch.cuda.get_device_name() if not args.tiny else "cpu",
        "model": loaded.name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "image_side": IMAGE_SIDE,
        "new_tokens": args.new_tokens,
    }
    report["one_at_a_time"] = generation_speed(loaded, data[: args.single], 1, args.new_tokens)
    report["batched"] = [generation_speed(loaded, data[: args.samples], b, args.new_tokens) for b in args.batches]
    single = report["one_at_a_time"]["samples_per_s"]
    for row in report["batched"]:
        row["speedup"] = round(row["samples_per_s"] / single, 2)
    report["chat"] = chat_speed(loaded, data, args.chat_tokens, args.repeats)
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
