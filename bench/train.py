"""Training throughput on one GPU: the lab's training path against a plain Trainer + PEFT floor.

    python bench/train.py                      # 3B LoRA at batch 4 and 16: ours, ours compiled, the floor
    python bench/train.py --qlora7b            # also QLoRA peak memory of the 7B architecture
    python bench/train.py --batches 4 --skip-plain --steps 30
    python bench/train.py --no-compile         # ours without the torch_compile: true run
    python bench/train.py --packing --answer-tokens 10 400 --skip-plain   # packing, on answers of varied length

The model is Qwen2.5-VL-3B's real architecture (and 7B's for QLoRA), built from its
config with random weights, so nothing is downloaded. The tokenizer is the lab's tiny
byte-level BPE (see :mod:`lab.tiny`): token ids stay in a small range, which changes no
cost of the model. Every sample is one 448x448 image (256 image tokens) and a prompt
plus answer of about 170 text tokens (chat template included), ~426 tokens in all.
``--answer-tokens MIN MAX`` draws each answer's length from another range (the default is
80-120 tokens): with a wide range, padded batches carry much padding and packed ones none.
``--packing`` adds the runs "ours+packing" (and "ours+compile+packing") with ``packing: true``;
the other runs of ours train with ``packing: false``.

"ours" is :func:`lab.training.runner.run_training`, the same call the app and the CLI
make; "ours+compile" is the same with ``torch_compile: true`` (its first steps include
the compilation, printed as the time of the first 10 steps). The floor is the usual recipe: ``transformers.Trainer`` +
PEFT, the processor
called in the collator on each batch, the model's own loss over full logits,
gradient checkpointing with the default (reentrant) mode. Both use LoRA rank 8 on
every linear layer of the language model, the vision tower frozen, bf16, gradient
checkpointing, AdamW, lr 1e-4.

Throughput is measured between logging points after warm-up (the first 10 steps are
not counted), from the same ``metrics.jsonl`` lines the app plots: samples/s, tokens/s
(text + image tokens, padding excluded), peak GPU memory (``max_memory_allocated``),
and MFU = 4 x parameters x tokens/s over the bf16 matrix-multiply rate measured here
(forward, activation gradients and the checkpointing recompute: the LoRA estimate).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

IMAGE_SIDE = 448
SIZES = {
    "3b": dict(
        text=dict(
            vocab_size=151936,
            hidden_size=2048,
            intermediate_size=11008,
            num_hidden_layers=36,
            num_attention_heads=16,
            num_key_value_heads=2,
        ),
        out_hidden=2048,
        tie=True,
    ),
    "7b": dict(
        text=dict(
            vocab_size=152064,
            hidden_size=3584,
            intermediate_size=18944,
            num_hidden_layers=28,
            num_attention_heads=28,
            num_key_value_heads=4,
        ),
        out_hidden=3584,
        tie=False,
    ),
}
WARMUP_STEPS = 10


def qwen25_vl_config(size: str, tokenizer):
    """Qwen2.5-VL-3B/7B-Instruct's architecture (their config.json values), with this tokenizer's special ids."""
    from transformers import Qwen2_5_VLConfig

    spec = SIZES[size]
    ids = {
        t: tokenizer.convert_tokens_to_ids(t)
        for t in ("<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<|video_pad|>", "<|vision_start|>", "<|vision_end|>")
    }
    text = dict(
        **spec["text"],
        max_position_embeddings=128000,
        rms_norm_eps=1e-6,
        hidden_act="silu",
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
        rope_parameters={"rope_type": "default", "rope_theta": 1e6, "mrope_section": [16, 24, 24]},
    )
    vision = dict(
        depth=32,
        hidden_size=1280,
        intermediate_size=3420,
        num_heads=16,
        in_channels=3,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
        window_size=112,
        fullatt_block_indexes=[7, 15, 23, 31],
        tokens_per_second=2,
        out_hidden_size=spec["out_hidden"],
        hidden_act="silu",
    )
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        tie_word_embeddings=spec["tie"],
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )


def make_processor():
    from lab.pixel_limits import set_image_pixels
    from lab.tiny import corpus_texts, train_tokenizer
    from lab.tiny import make_processor as tiny_processor

    processor = tiny_processor("qwen2_5_vl", train_tokenizer("qwen2_5_vl", corpus_texts()))
    set_image_pixels(processor, min_pixels=IMAGE_SIDE * IMAGE_SIDE, max_pixels=IMAGE_SIDE * IMAGE_SIDE)
    return processor


def make_dataset(folder: Path, processor, samples: int, seed: int = 0, answer_tokens=(80, 120)) -> Path:
    """``samples`` records over 64 distinct 448x448 pictures, answers of ``answer_tokens`` tokens (both ends in)."""
    from PIL import Image, ImageDraw

    from lab.tiny import corpus_texts

    rng = random.Random(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    for i in range(64):
        im = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(im)
        for _ in range(12):
            x, y = rng.randrange(IMAGE_SIDE - 40), rng.randrange(IMAGE_SIDE - 40)
            draw.rectangle(
                [x, y, x + rng.randrange(20, 200), y + rng.randrange(20, 200)],
                fill=tuple(rng.randrange(256) for _ in range(3)),
            )
        im.save(folder / "images" / f"{i:03d}.png")
    words = [w for w in " ".join(t for t in corpus_texts() if t.isascii()).split() if "<" not in w and ">" not in w]
    tokenizer = processor.tokenizer
    with open(folder / "data.jsonl", "w", encoding="utf-8") as f:
        for n in range(samples):
            target, answer = rng.randint(*answer_tokens), []
            while len(tokenizer(" ".join(answer))["input_ids"]) < target:
                answer.append(rng.choice(words))
            record = {
                "id": f"{n:05d}",
                "images": [f"images/{n % 64:03d}.png"],
                "messages": [
                    {
                        "role": "user",
                        "content": "<image>Describe this picture in detail: the shapes, their colours, "
                        "where they are and what the whole picture could be.",
                    },
                    {"role": "assistant", "content": " ".join(answer)},
                ],
            }
            f.write(json.dumps(record) + "\n")
    return folder


def matmul_tflops() -> float:
    """The card's bf16 matrix-multiply rate, measured: 8192^3 products, median of 20 after warm-up."""
    import torch

    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    times = []
    for i in range(25):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        a @ b
        end.record()
        torch.cuda.synchronize()
        if i >= 5:
            times.append(start.elapsed_time(end) / 1e3)
    times.sort()
    return 2 * 8192**3 / times[len(times) // 2] / 1e12


def steady_state(run_dir: Path, until: int | None = None) -> dict:
    """Samples/s and tokens/s between logging points after warm-up (up to step ``until``), peak memory,
    and the warm-up's seconds, from metrics.jsonl."""
    from lab.training.metrics import log_rows, read_metrics

    rows = [r for r in log_rows(read_metrics(run_dir)) if r.get("loss") is not None]
    rows = [r for r in rows if until is None or r["step"] <= until]
    warmup = next(r["elapsed_s"] for r in rows if r["step"] >= WARMUP_STEPS)
    samples = tokens = seconds = 0.0
    for previous, row in zip(rows, rows[1:]):
        if previous["step"] < WARMUP_STEPS:
            continue
        dt = row["elapsed_s"] - previous["elapsed_s"]
        samples, tokens, seconds = samples + row["samples_per_s"] * dt, tokens + row["tokens_per_s"] * dt, seconds + dt
    return {
        "samples_per_s": samples / seconds,
        "tokens_per_s": tokens / seconds,
        "warmup_s": warmup,
        "peak_gib": max(r.get("gpu_mem_gib") or 0 for r in rows),
        "loss": rows[-1]["loss"],
    }


def bench_config(dataset: Path, batch: int, steps: int, name: str, **extra):
    from lab.train_config import TrainConfig

    return TrainConfig(
        model=extra.pop("model", name),
        dataset=str(dataset),
        run_name=name,
        method=extra.pop("method", "lora"),
        lora_rank=8,
        lora_alpha=32,
        lora_dropout=extra.pop("lora_dropout", 0.05),
        lora_targets=["language"],
        learning_rate=1e-4,
        max_steps=steps,
        per_device_batch_size=batch,
        gradient_accumulation_steps=extra.pop("gradient_accumulation_steps", 1),
        max_length=1024,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        val_ratio=0.0,
        logging_steps=5,
        save_steps=100000,
        gradient_checkpointing=extra.pop("gradient_checkpointing", True),
        torch_compile=extra.pop("torch_compile", False),  # "ours+compile" asks for it; the config's default is on
        packing=extra.pop("packing", False),
        min_pixels=IMAGE_SIDE * IMAGE_SIDE,
        max_pixels=IMAGE_SIDE * IMAGE_SIDE,
        **extra,
    )


def run_ours(loaded, dataset: Path, batch: int, steps: int, name: str, **extra) -> dict:
    import torch

    from lab.paths import runs_dir
    from lab.training.runner import run_training
    from lab.training.setup import finish_model, unwrap_adapters

    torch.cuda.reset_peak_memory_stats()
    cfg = bench_config(dataset, batch, steps, name, model=loaded.name, **extra)
    run_training(cfg, loaded=loaded, log=lambda line: print("   ", line))
    loaded.model = unwrap_adapters(loaded.model)
    finish_model(loaded.model)
    return steady_state(runs_dir() / name)


def run_auto(loaded, dataset: Path, effective: int, steps: int) -> dict:
    """Ours with ``per_device_batch_size`` and ``gradient_checkpointing`` ``auto``, as the app sets them on a GPU."""
    from lab.paths import runs_dir
    from lab.train_config import TrainConfig
    from lab.training.runs import CONFIG_FILE

    result = run_ours(
        loaded,
        dataset,
        "auto",
        steps,
        "auto",
        gradient_checkpointing="auto",
        gradient_accumulation_steps=effective,
        torch_compile=True,  # as the app trains on a GPU
    )
    chosen = TrainConfig.from_yaml(runs_dir() / "auto" / CONFIG_FILE)
    return {**result, "batch": chosen.per_device_batch_size, "checkpointing": chosen.gradient_checkpointing}


def run_plain(model, processor, dataset: Path, batch: int, steps: int, name: str) -> dict:
    """The floor: Trainer + PEFT, processor in the collator, the model's own loss."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from lab.conversation import to_hf_messages
    from lab.dataset import load_records
    from lab.images import open_image
    from lab.model_parts import lora_target_modules
    from lab.paths import runs_dir
    from lab.training.metrics import Throughput, make_metrics_callback

    records = load_records(dataset, absolute_images=True)
    im_start = processor.tokenizer.convert_tokens_to_ids("<|im_start|>")

    def collate(rows):
        texts = [processor.apply_chat_template(to_hf_messages(r["messages"]), tokenize=False) for r in rows]
        images = [open_image(p) for r in rows for p in r["images"]]
        batch_ = processor(text=texts, images=images, padding=True, return_tensors="pt")
        labels = batch_["input_ids"].clone()
        labels[batch_["attention_mask"] == 0] = -100
        for row in labels:  # learn from the last "<|im_start|>assistant\n" on
            starts = (row == im_start).nonzero().flatten()
            row[: int(starts[-1]) + 3] = -100
        batch_["labels"] = labels
        return batch_

    throughput = Throughput()

    class PlainTrainer(Trainer):
        def compute_loss(self, model, inputs, *a, **kw):
            throughput.add(inputs)  # counting only
            return super().compute_loss(model, inputs, *a, **kw)

    torch.cuda.reset_peak_memory_stats()
    target = lora_target_modules(model, {"language"})
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, lora_dropout=0.05, target_modules=target))
    peft_model.enable_input_require_grads()
    run_dir = runs_dir() / name
    args = TrainingArguments(
        output_dir=str(run_dir),
        per_device_train_batch_size=batch,
        max_steps=steps,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        logging_steps=5,
        logging_first_step=True,
        bf16=True,
        gradient_checkpointing=True,
        remove_unused_columns=False,
        report_to=[],
        save_strategy="no",
        disable_tqdm=True,
    )
    trainer = PlainTrainer(
        model=peft_model,
        args=args,
        train_dataset=records,
        data_collator=collate,
        callbacks=[make_metrics_callback(run_dir, throughput)],
    )
    trainer.remove_callback(PrinterCallback)
    trainer.train()
    del trainer
    peft_model.unload()
    model.requires_grad_(False)
    return steady_state(run_dir)


def build_model(size: str, processor):
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration

    config = qwen25_vl_config(size, processor.tokenizer)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2_5_VLForConditionalGeneration._from_config(
            config, dtype=torch.bfloat16, attn_implementation="sdpa"
        )
    return model


def loaded_model(model, processor, name: str, quantization=None):
    import torch

    from lab.models import LoadedModel

    return LoadedModel(
        model=model,
        processor=processor,
        family="qwen2_5_vl",
        name=name,
        device="cuda",
        dtype=torch.bfloat16,
        quantization=quantization,
        is_tiny=False,
    )


def qlora_7b(work: Path, processor, dataset: Path, batch: int, steps: int) -> dict:
    """Peak memory of QLoRA on the 7B architecture: random bf16 weights saved, then loaded in 4-bit as users do."""
    import torch

    from lab.models import load_model

    folder = work / "random-qwen2.5-vl-7b"
    model = build_model("7b", processor)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    loaded = load_model(str(folder), quantization="4bit", min_pixels=IMAGE_SIDE**2, max_pixels=IMAGE_SIDE**2)
    weights = torch.cuda.memory_allocated() / 2**30
    result = run_ours(loaded, dataset, batch, steps, f"qlora7b-b{batch}", method="qlora")
    return {**result, "weights_gib": weights}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--steps", type=int, default=30, help="steps of each run of ours (the first 10 are warm-up)")
    parser.add_argument("--plain-steps", type=int, default=20, help="steps of each floor run")
    parser.add_argument("--skip-plain", action="store_true")
    parser.add_argument("--no-compile", action="store_true", help="skip the run of ours with torch_compile: true")
    parser.add_argument("--qlora7b", action="store_true", help="also measure QLoRA on the 7B architecture")
    parser.add_argument(
        "--auto",
        type=int,
        metavar="EFFECTIVE",
        default=None,
        help="also run ours with batch and checkpointing auto, for an effective batch of EFFECTIVE samples",
    )
    parser.add_argument("--packing", action="store_true", help="also run ours with packing: true (padding-free)")
    parser.add_argument(
        "--answer-tokens", type=int, nargs=2, default=[80, 120], metavar=("MIN", "MAX"), help="answer lengths drawn"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)

    import torch

    from lab.training.setup import unwrap_adapters

    if not torch.cuda.is_available():
        print("bench/train.py needs a CUDA GPU; none is visible.")
        return 0
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lab-bench-"))
    os.environ["LAB_HOME"] = str(work / "home")
    processor = make_processor()
    samples = max(args.batches) * max(args.steps, args.plain_steps) + 64
    dataset = make_dataset(work / "data", processor, samples, answer_tokens=tuple(args.answer_tokens))
    peak = matmul_tflops()
    model = build_model("3b", processor)
    params = sum(p.numel() for p in model.parameters())
    results = {
        "device": torch.cuda.get_device_name(),
        "date": time.strftime("%Y-%m-%d"),
        "answer_tokens": args.answer_tokens,
        "bf16_tflops": peak,
        "params": params,
        "torch": torch.__version__,
        "runs": [],
    }
    print(f"{results['device']}: bf16 matmul {peak:.0f} TFLOP/s; model {params / 1e9:.2f}B parameters", flush=True)
    folder = work / "random-qwen2.5-vl-3b"  # its config.json: what the checks before a run read, as for a real model
    model.config.save_pretrained(folder)
    loaded = loaded_model(model, processor, str(folder))
    for batch in args.batches:
        runs = [("ours", lambda b=batch: run_ours(loaded, dataset, b, args.steps, f"ours-b{b}"))]
        if not args.no_compile:
            runs.append(
                (
                    "ours+compile",
                    lambda b=batch: run_ours(loaded, dataset, b, args.steps, f"compiled-b{b}", torch_compile=True),
                )
            )
        if args.packing:
            runs.append(
                ("ours+packing", lambda b=batch: run_ours(loaded, dataset, b, args.steps, f"packed-b{b}", packing=True))
            )
            if not args.no_compile:
                runs.append(
                    (
                        "ours+compile+packing",
                        lambda b=batch: run_ours(
                            loaded, dataset, b, args.steps, f"compiled-packed-b{b}", torch_compile=True, packing=True
                        ),
                    )
                )
        if not args.skip_plain:
            runs.append(
                (
                    "plain",
                    lambda b=batch: run_plain(loaded.model, processor, dataset, b, args.plain_steps, f"plain-b{b}"),
                )
            )
        for label, run in runs:
            try:
                result = {"what": label, "batch": batch, **run()}
            except Exception as err:  # one failed variant must not lose the others' figures
                print(f"{label} batch {batch} failed: {type(err).__name__}: {err}", flush=True)
                loaded.model = unwrap_adapters(loaded.model)
                continue
            result["mfu"] = 4 * params * result["tokens_per_s"] / (peak * 1e12)
            results["runs"].append(result)
            print(_row(result), flush=True)
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=2))
    if args.auto:
        try:
            result = {"what": "ours, auto", **run_auto(loaded, dataset, args.auto, args.steps)}
            result["mfu"] = 4 * params * result["tokens_per_s"] / (peak * 1e12)
            results["runs"].append(result)
            print(_row(result) + f"  (chose batch {result['batch']}, checkpointing {result['checkpointing']})")
        except Exception as err:
            print(f"auto failed: {type(err).__name__}: {err}", flush=True)
    if args.qlora7b:
        del loaded, model
        gc.collect()  # the trainers' reference cycles still hold the 3B model
        torch.cuda.empty_cache()
        try:
            result = {"what": "qlora-7b", "batch": 4, **qlora_7b(work, processor, dataset, 4, 20)}
            results["runs"].append(result)
            print(_row(result) + f"  (4-bit weights {result['weights_gib']:.1f} GiB)", flush=True)
        except Exception as err:
            print(f"qlora-7b failed: {type(err).__name__}: {err}", flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


def _row(r: dict) -> str:
    mfu = f"  MFU {100 * r['mfu']:.1f}%" if "mfu" in r else ""
    return (
        f"{r['what']:>20} batch {r['batch']:>2}: {r['samples_per_s']:6.2f} samples/s  {r['tokens_per_s']:8.0f} tokens/s"
        f"  peak {r['peak_gib']:5.1f} GiB{mfu}  loss {r['loss']:.3f}  first {WARMUP_STEPS} steps {r['warmup_s']:.0f}s"
    )


if __name__ == "__main__":
    raise SystemExit(main())
