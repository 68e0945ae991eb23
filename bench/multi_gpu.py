"""Multi-GPU training: the same LoRA run through ``python -m lab train`` on 1 GPU and under
``accelerate launch`` on N GPUs (the path the Train tab's "GPUs: N" takes).

    python bench/multi_gpu.py --gpus 2 --batch 4 --steps 30

The model is the Qwen2.5-VL-3B architecture with random weights (``bench/train.py``),
saved once to a folder so every process loads it like a real model; settings as in
``bench/train.py`` (LoRA r 8 on the language model, 448x448 images, bf16, gradient
checkpointing). Throughput is read from each run's ``metrics.jsonl`` after warm-up; it
counts every process's samples. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=2)
    parser.add_argument("--batch", type=int, default=4, help="per GPU")
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()

    import os

    import torch
    from train import bench_config, build_model, make_dataset, make_processor, steady_state

    work = Path(tempfile.mkdtemp(prefix="lab-multi-"))
    os.environ["LAB_HOME"] = str(work)
    processor = make_processor()
    model = build_model("3b", processor)
    model.save_pretrained(work / "model")
    processor.save_pretrained(work / "model")
    del model
    torch.cuda.empty_cache()
    dataset = make_dataset(work / "data", processor, samples=args.steps * args.batch * args.gpus)
    results = {}
    for n in (1, args.gpus):
        name = f"gpus{n}"
        cfg = dataclasses.replace(
            bench_config(dataset, args.batch, args.steps, name), model=str(work / "model"), num_gpus=n
        )
        config = cfg.to_yaml(work / f"{name}.yaml")
        started = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "lab", "train", "--config", str(config)], cwd=ROOT)
        figures = steady_state(work / "checkpoints" / name)
        results[name] = {
            "exit": done.returncode,
            "wall_s": round(time.perf_counter() - started, 1),
            **{k: round(v, 2) for k, v in figures.items()},
        }
    one, many = results["gpus1"], results[f"gpus{args.gpus}"]
    results["scaling"] = round(many["tokens_per_s"] / one["tokens_per_s"], 2)
    results["command"] = f"python -m lab train --config CONFIG  (num_gpus: {args.gpus}; runs accelerate launch)"
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
