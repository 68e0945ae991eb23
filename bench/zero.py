"""DeepSpeed on several GPUs of one host, through ``python -m lab train`` (the path the Train tab's
"GPUs: N" and "DeepSpeed" settings take).

    python bench/zero.py --gpus 2                       # LoRA 3B: plain, zero2, zero3, zero3_offload
    python bench/zero.py --gpus 2 --stages zero3 --full7b  # also full fine-tuning of the 7B architecture
    python bench/zero.py --qlora7b                      # QLoRA 7B on one GPU, evaluating while it trains

The models are Qwen2.5-VL's real 3B / 7B architectures with random weights (``bench/train.py``),
saved once to a folder so every process loads them like real models. The LoRA runs use
``bench/train.py``'s settings (rank 8 on the language model, 448x448 images, bf16, gradient
checkpointing, constant lr) with the same data and seed, so their loss curves should agree
within noise: each stage's losses are compared step by step with the plain multi-GPU run.
Throughput and peak memory come from each run's ``metrics.jsonl`` (rank 0's GPU). Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def losses(run_dir: Path) -> dict[int, float]:
    from lab.training.metrics import log_rows, read_metrics

    return {r["step"]: r["loss"] for r in log_rows(read_metrics(run_dir)) if r.get("loss") is not None}


def train(work: Path, cfg, timeout: float) -> dict:
    """One run through the CLI; its exit code, wall time, figures and losses."""
    from train import steady_state

    config = cfg.to_yaml(work / f"{cfg.run_name}.yaml")
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-m", "lab", "train", "--config", str(config)],
            cwd=ROOT,
            timeout=timeout,
            capture_output=True,
            text=True,
        )
        output = done.stdout + done.stderr
        (work / f"{cfg.run_name}.log").write_text(output)
        # The launcher's own traceback comes last; the rank's error is the first line that names one.
        errors = [line for line in output.splitlines() if "Error" in line or "error:" in line]
        code, tail = done.returncode, "\n".join(errors[:12]) or output[-1500:]
    except subprocess.TimeoutExpired:
        code, tail = "timeout", ""
    result = {"exit": code, "wall_s": round(time.perf_counter() - started, 1)}
    run_dir = work / "home" / "checkpoints" / cfg.run_name
    try:
        result.update({k: round(v, 3) for k, v in steady_state(run_dir).items()})
        result["losses"] = losses(run_dir)
    except (OSError, StopIteration, ValueError, ZeroDivisionError):
        result["tail"] = tail  # no steady state to read: show why
    print(json.dumps({cfg.run_name: {k: v for k, v in result.items() if k != "losses"}}), flush=True)
    return result


def save_model(work: Path, size: str, processor) -> Path:
    import torch
    from train import build_model

    folder = work / f"random-qwen2.5-vl-{size}"
    if not (folder / "config.json").is_file():
        model = build_model(size, processor)
        model.save_pretrained(folder)
        processor.save_pretrained(folder)
        del model
        torch.cuda.empty_cache()
    return folder


def full_config(lora, model: Path, gpus: int, stage: str | None):
    """``lora``'s settings as a full fine-tune of the language model and the merger (vision frozen)."""
    from lab.train_config import TrainConfig

    fields = {
        **lora.to_dict(),
        "model": str(model),
        "method": "full",
        "lora_targets": [],
        "train_language": True,
        "train_merger": True,
        "learning_rate": 1e-5,
        "num_gpus": gpus,
        "deepspeed": stage,
    }
    return TrainConfig(**fields)


def compare(plain: dict, other: dict) -> float | None:
    """The largest difference of the logged losses at the same steps (None when either has none)."""
    a, b = plain.get("losses") or {}, other.get("losses") or {}
    common = sorted(set(a) & set(b))
    return round(max(abs(a[s] - b[s]) for s in common), 4) if common else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="per GPU")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--stages", nargs="*", default=["plain", "zero2", "zero3", "zero3_offload"])
    parser.add_argument("--full7b", action="store_true", help="full fine-tuning of the 7B architecture with zero3")
    parser.add_argument("--full-steps", type=int, default=12)
    parser.add_argument(
        "--qlora7b", action="store_true", help="QLoRA on the 7B architecture, evaluating while it trains"
    )
    parser.add_argument("--score", action="store_true", help="with --qlora7b: also answer and score while training")
    parser.add_argument("--timeout", type=float, default=420, help="seconds one run may take")
    parser.add_argument("--workdir", default=None)
    args = parser.parse_args()

    import torch
    from train import bench_config, make_dataset, make_processor

    if not torch.cuda.is_available():
        print("bench/zero.py needs CUDA GPUs; none is visible.")
        return 0
    work = Path(args.workdir or tempfile.mkdtemp(prefix="lab-ds-"))
    os.environ["LAB_HOME"] = str(work / "home")
    processor = make_processor()
    dataset = make_dataset(
        work / "data", processor, samples=max(args.steps, args.full_steps) * args.batch * args.gpus + 64
    )
    results: dict = {
        "device": torch.cuda.get_device_name(),
        "gpus": torch.cuda.device_count(),
        "date": time.strftime("%Y-%m-%d"),
        "torch": torch.__version__,
    }
    if args.stages:
        model = save_model(work, "3b", processor)
        runs = {}
        for stage in args.stages:
            cfg = bench_config(dataset, args.batch, args.steps, f"lora3b-{stage}")
            cfg = dataclasses.replace(
                cfg, model=str(model), num_gpus=args.gpus, deepspeed=None if stage == "plain" else stage
            )
            runs[stage] = train(work, cfg, args.timeout)
        for stage, run in runs.items():
            run["max_loss_diff_vs_plain"] = compare(runs.get("plain", {}), run) if stage != "plain" else 0.0
            run.pop("losses", None)
        results["lora3b"] = runs
    if args.full7b:
        model = save_model(work, "7b", processor)
        full = {}
        for label, gpus, stage in (("one_gpu_no_zero", 1, None), (f"zero3_{args.gpus}gpus", args.gpus, "zero3")):
            cfg = full_config(bench_config(dataset, 1, args.full_steps, f"full7b-{label}"), model, gpus, stage)
            full[label] = train(work, cfg, args.timeout)
            full[label].pop("losses", None)
        results["full7b"] = full
    if args.qlora7b:
        model = save_model(work, "7b", processor)
        cfg = bench_config(dataset, 4, 20, "qlora7b-eval", method="qlora")
        # Answers are scored too with --score (it needs rouge-score, nltk and jieba installed).
        metrics = ["bleu", "json_valid"] if args.score else []
        cfg = dataclasses.replace(
            cfg,
            model=str(model),
            val_ratio=0.05,
            eval_steps=10,
            eval_metrics=metrics,
            eval_samples=8,
            eval_max_new_tokens=32,
        )
        run = train(work, cfg, args.timeout)
        run.pop("losses", None)
        from lab.training.metrics import read_metrics

        evals = [r for r in read_metrics(work / "home" / "checkpoints" / cfg.run_name) if "eval_loss" in r]
        run["evaluations"] = [{k: r[k] for k in r if k.startswith("eval_") or k == "step"} for r in evals]
        results["qlora7b"] = run
    print(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
