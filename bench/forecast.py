"""The memory and speed forecast (lab/training/fit.py) against short real trainings.

    python bench/forecast.py                   # LoRA, QLoRA and full on the 3B and 7B architectures (one GPU)
    python bench/forecast.py --auto            # also the automatic batch and checkpointing on the 3B LoRA job
    python bench/forecast.py --tiny --steps 3  # the tiny model on the CPU: the same path, no memory measured

Each run goes through :func:`lab.training.runner.run_training` for a few steps, with the
models of bench/train.py (Qwen2.5-VL-3B/7B architectures, random weights, 448x448 images,
~426-token samples) and ``torch_compile: false``. The forecast is made from the same config
as a person's dry run makes it (the model's config.json and the dataset's image sizes and
text); measured are ``torch.cuda.max_memory_allocated`` and tokens/s after the first steps.
A job the forecast says does not fit the card is reported and skipped. Prints one line per
run, then JSON and a Markdown table. Bounded: about 5 minutes on one H200 with the defaults.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GIB = 2**30
JOBS = [  # (size, method, batch, checkpointing)
    ("3b", "lora", 4, True),
    ("3b", "lora", 16, True),
    ("3b", "lora", 8, False),
    ("3b", "full", 4, True),
    ("3b", "qlora", 4, True),
    ("7b", "lora", 4, True),
    ("7b", "qlora", 4, True),
    ("7b", "full", 4, True),
]
TINY_JOBS = [("tiny", "lora", 2, True), ("tiny", "lora", 2, False), ("tiny", "full", 2, True)]


def job_config(model_dir: Path, dataset: Path, method: str, batch, checkpointing, steps: int, name: str, side: int):
    from lab.train_config import TrainConfig

    full = dict(train_language=True, train_merger=True) if method == "full" else {}
    return TrainConfig(
        model=str(model_dir),
        dataset=str(dataset),
        run_name=name,
        method=method,
        lora_rank=8,
        lora_alpha=32,
        lora_targets=["language"],
        learning_rate=1e-5 if method == "full" else 1e-4,
        max_steps=steps,
        per_device_batch_size=batch,
        gradient_accumulation_steps=1,
        gradient_checkpointing=checkpointing,
        max_length=1024,
        warmup_ratio=0.0,
        lr_scheduler="constant",
        val_ratio=0.0,
        logging_steps=1,
        save_steps=100000,
        torch_compile=False,
        min_pixels=side * side,
        max_pixels=side * side,
        **full,
    )


def measured(run_dir: Path, skip: int) -> dict:
    """tokens/s over the logged steps after the first ``skip`` (warm-up), from metrics.jsonl."""
    from lab.training.metrics import log_rows, read_metrics

    rows = [r for r in log_rows(read_metrics(run_dir)) if r.get("tokens_per_s") and r["step"] > skip]
    speeds = [r["tokens_per_s"] for r in rows]
    return {"tokens_per_s": sum(speeds) / len(speeds) if speeds else None}


def run_job(loaded, cfg, device: str, skip: int) -> dict:
    """Forecast ``cfg``, train it a few steps, measure; a job that the forecast says does not fit is skipped."""
    from lab.paths import runs_dir
    from lab.training.fit import plan
    from lab.training.runner import run_training
    from lab.training.setup import finish_model, unwrap_adapters

    found = plan(cfg, device)
    row = {
        "run": cfg.run_name,
        "method": cfg.method,
        "batch": found.batch,
        "checkpointing": found.checkpointing,
        "forecast_peak_gib": round(found.result.allocated_gib, 4),
        "forecast_tokens_per_s": found.result.tokens_per_s,
        "fits": found.fits,
        "mean_tokens": round(found.lengths.mean_tokens),
        "peak_gib": None,
        "tokens_per_s": None,
    }
    if found.fits is False:
        row["skipped"] = "the forecast says it does not fit"
        return row
    cuda = device.startswith("cuda")
    if cuda:
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    run_training(cfg, loaded=loaded, log=lambda line: None)
    if cuda:
        row["peak_gib"] = round(torch.cuda.max_memory_allocated() / GIB, 2)
    loaded.model = unwrap_adapters(loaded.model)
    finish_model(loaded.model)
    row.update(measured(runs_dir() / cfg.run_name, skip))
    # A 7B full run writes 15 GB of weights; the next jobs need the disk more than these files.
    for kept in (runs_dir() / cfg.run_name).iterdir():
        if kept.name != "metrics.jsonl":
            shutil.rmtree(kept) if kept.is_dir() else kept.unlink()
    return row


def gpu_models(work: Path, size: str, quantized: bool):
    """A random ``size`` model (bench/train.py's), loaded as the jobs need it, and its folder (config.json)."""
    import torch

    from bench.train import build_model, loaded_model, make_processor
    from lab.models import load_model

    processor = make_processor()
    folder = work / f"random-{size}{'-4bit' if quantized else ''}"
    model = build_model(size, processor)
    if not quantized:
        model.config.save_pretrained(folder)
        return loaded_model(model, processor, folder.name), folder
    model.save_pretrained(folder)  # QLoRA loads the saved weights in 4-bit, as people do
    processor.save_pretrained(folder)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    return load_model(str(folder), quantization="4bit", min_pixels=448**2, max_pixels=448**2), folder


def gpu_rows(work: Path, dataset: Path, steps: int, auto: bool, sizes: list[str]) -> list[dict]:
    import torch

    rows = []
    groups = {}
    for size, method, batch, ckpt in (job for job in JOBS if job[0] in sizes):
        groups.setdefault((size, method == "qlora"), []).append((method, batch, ckpt))
    for (size, quantized), jobs in groups.items():
        try:
            loaded, folder = gpu_models(work, size, quantized)
        except Exception as err:  # bitsandbytes missing, say: the other groups' figures still count
            rows += [{"run": f"{size}-{m}-b{b}", "error": f"{type(err).__name__}: {err}"} for m, b, _ in jobs]
            print(_line(rows[-1]), flush=True)
            continue
        for method, batch, ckpt in jobs:
            name = f"{size}-{method}-b{batch}-{'ckpt' if ckpt else 'nockpt'}"
            cfg = job_config(folder, dataset, method, batch, ckpt, steps, name, 448)
            rows.append(_safe(name, loaded, cfg, "cuda", 3))
            print(_line(rows[-1]), flush=True)
        if auto and size == "3b" and not quantized:
            cfg = job_config(folder, dataset, "lora", "auto", "auto", steps, "3b-lora-auto", 448)
            cfg.gradient_accumulation_steps = 16
            rows.append(_safe(cfg.run_name, loaded, cfg, "cuda", 3))
            print(_line(rows[-1]), flush=True)
        del loaded
        gc.collect()
        torch.cuda.empty_cache()
        if quantized:
            shutil.rmtree(folder)  # the 4-bit source weights (15 GB for 7B)
    return rows


def _safe(name: str, *job) -> dict:
    try:
        return run_job(*job)
    except Exception as err:  # one failed job must not lose the others' figures
        return {"run": name, "error": f"{type(err).__name__}: {err}"}


def tiny_rows(work: Path, steps: int) -> list[dict]:
    from lab.models import load_model
    from lab.tiny import build_tiny_model

    folder = build_tiny_model("qwen2_5_vl", work / "tiny")
    rows = []
    for size, method, batch, ckpt in TINY_JOBS:
        loaded = load_model(str(folder), device="cpu")
        name = f"{size}-{method}-b{batch}-{'ckpt' if ckpt else 'nockpt'}"
        cfg = job_config(folder, Path("data/sample"), method, batch, ckpt, steps, name, 112)
        rows.append(_safe(name, loaded, cfg, "cpu", 1))
        print(_line(rows[-1]), flush=True)
    return rows


def _line(r: dict) -> str:
    if "error" in r:
        return f"{r['run']:>22}: failed: {r['error']}"
    if r.get("skipped"):
        return f"{r['run']:>22}: skipped ({r['skipped']}; forecast {r['forecast_peak_gib']} GiB)"
    return (
        f"{r['run']:>22}: forecast {r['forecast_peak_gib']} GiB, {_num(r['forecast_tokens_per_s'])} tokens/s; "
        f"measured {_num(r['peak_gib'], '{:.2f}')} GiB, {_num(r['tokens_per_s'])} tokens/s"
    )


def _num(value, fmt: str = "{:,.0f}") -> str:
    return "–" if value is None else fmt.format(value)


def table(rows: list[dict]) -> str:
    lines = [
        "| run | batch | checkpointing | forecast GiB | measured GiB | forecast tokens/s | measured tokens/s |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['run']} | | | | failed: {r['error'][:60]} | | |")
            continue
        lines.append(
            f"| {r['run']} | {r['batch']} | {'on' if r['checkpointing'] else 'off'} | "
            f"{r['forecast_peak_gib']} | {_num(r['peak_gib'], '{:.2f}')} | {_num(r['forecast_tokens_per_s'])} | "
            f"{_num(r['tokens_per_s'])} |" + (" skipped: does not fit |" if r.get("skipped") else "")
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="steps of each run (the first 3 are not timed)")
    parser.add_argument(
        "--auto", action="store_true", help="also train the 3B LoRA job with batch and checkpointing auto"
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny model on the CPU (a check of the script itself)")
    parser.add_argument("--sizes", nargs="+", default=["3b", "7b"], choices=["3b", "7b"], help="architectures to run")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lab-forecast-"))
    os.environ["LAB_HOME"] = str(work / "home")
    started = time.time()
    if args.tiny:
        rows = tiny_rows(work, args.steps)
    else:
        import torch

        if not torch.cuda.is_available():
            print("bench/forecast.py needs a CUDA GPU (or --tiny for the CPU check); none is visible.")
            return 0
        from bench.train import make_dataset, make_processor

        dataset = make_dataset(work / "data", make_processor(), samples=16 * args.steps + 64)
        rows = gpu_rows(work, dataset, args.steps, args.auto, args.sizes)
    results = {"date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - started), "runs": rows}
    print(json.dumps(results, indent=2))
    print(table(rows))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
