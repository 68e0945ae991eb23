"""Where a training step's time goes, for the model and data of ``bench/train.py``.

    python bench/train_profile.py --batches 4 16 [--compile] [--out DIR]

Builds the same random Qwen2.5-VL-3B and data as the benchmark and prepares them with
the lab's own code (data encoding, LoRA setup, collator, grouped vision attention), then
times the parts separately: the data loader alone, one fixed batch (forward, backward,
optimizer), the data loader and the step together, and a ``torch.profiler`` table of
the fixed batch. ``--compile`` also times the step with each decoder layer compiled.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import train as bench  # noqa: E402  (bench/train.py)


def timed(fn, repeat: int) -> float:
    import torch

    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / repeat


def parts(model, optimizer, batch):
    """Seconds of forward, backward and optimizer step for ``batch``, each timed with events."""
    import torch
    import torch.nn.functional as F

    events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    b = dict(batch)
    positions, index, targets = b.pop("loss_positions"), b.pop("loss_index"), b.pop("loss_targets")
    b.pop("labels")
    events[0].record()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(**b, use_cache=False, logits_to_keep=positions).logits
        picked = logits.reshape(-1, logits.shape[-1]).index_select(0, index).float()
        loss = F.cross_entropy(picked, targets)
    events[1].record()
    loss.backward()
    events[2].record()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    events[3].record()
    torch.cuda.synchronize()
    return [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(3)]


def to_device(batch):
    return {k: v.to("cuda", non_blocking=True) for k, v in batch.items()}


def profile_batch(model, optimizer, loader, batch_size: int, out: Path, compile_layers: bool) -> None:
    import torch

    it = iter(loader)
    for _ in range(3):
        next(it)
    rate = 20 / timed(lambda: [next(it) for _ in range(20)], 1)
    print(f"batch {batch_size}: data loader alone {rate:.1f} batches/s", flush=True)
    batch = to_device(next(it))
    for _ in range(3):
        parts(model, optimizer, batch)
    split = [sum(x) / 10 for x in zip(*(parts(model, optimizer, batch) for _ in range(10)))]
    print(f"batch {batch_size}: fixed batch forward {split[0]:.3f}s backward {split[1]:.3f}s optimizer {split[2]:.3f}s "
          f"= {sum(split):.3f}s/step", flush=True)  # fmt: skip
    vision = model.get_base_model().model.visual
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        seconds = timed(lambda: vision(batch["pixel_values"], grid_thw=batch["image_grid_thw"]), 5)
    print(f"batch {batch_size}: vision tower forward alone {seconds:.3f}s", flush=True)
    loop = timed(lambda: parts(model, optimizer, to_device(next(it))), 15)
    print(f"batch {batch_size}: data loader + step {loop:.3f}s/step", flush=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:  # fmt: skip
        for _ in range(3):
            parts(model, optimizer, batch)
    averages = prof.key_averages()
    (out / f"profile_b{batch_size}_cuda.txt").write_text(averages.table(sort_by="device_time_total", row_limit=60))
    (out / f"profile_b{batch_size}_cpu.txt").write_text(averages.table(sort_by="self_cpu_time_total", row_limit=60))
    print(averages.table(sort_by="self_device_time_total", row_limit=18), flush=True)
    if compile_layers:
        for layer in model.get_base_model().model.language_model.layers:
            layer.compile()
        start = time.perf_counter()
        for _ in range(3):
            parts(model, optimizer, batch)
        split = [sum(x) / 10 for x in zip(*(parts(model, optimizer, batch) for _ in range(10)))]
        print(f"batch {batch_size}: compiled layers (warm-up {time.perf_counter() - start:.0f}s): forward {split[0]:.3f}s "
              f"backward {split[1]:.3f}s optimizer {split[2]:.3f}s = {sum(split):.3f}s/step", flush=True)  # fmt: skip


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 16])
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--out", default=".")
    args = parser.parse_args(argv)

    import torch
    from torch.utils.data import DataLoader

    from lab.training.collator import TrainDataset
    from lab.training.data import build_data
    from lab.training.setup import prepare_model
    from lab.training.speed import use_grouped_vision_attention
    from lab.training.trainer import LossCollator, dataloader_workers

    if not torch.cuda.is_available():
        print("bench/train_profile.py needs a CUDA GPU; none is visible.")
        return 0
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="lab-profile-"))
    os.environ["LAB_HOME"] = str(work / "home")
    processor = bench.make_processor()
    dataset = bench.make_dataset(work / "data", processor, samples=16 * 40)
    cfg = bench.bench_config(dataset, max(args.batches), 30, "profile")
    data = build_data(cfg, processor, print)
    model = prepare_model(bench.build_model("3b", processor), cfg).model
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    use_grouped_vision_attention(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True)
    workers = dataloader_workers("cuda")
    print(f"{torch.cuda.get_device_name()}, {os.cpu_count()} CPUs, {workers} loader workers", flush=True)
    for batch_size in args.batches:
        loader = DataLoader(TrainDataset(data.train, processor), batch_size=batch_size, shuffle=True,
                            num_workers=workers, collate_fn=LossCollator(processor.tokenizer.pad_token_id, 8),
                            pin_memory=True, persistent_workers=True, prefetch_factor=4)  # fmt: skip
        profile_batch(model, optimizer, loader, batch_size, out, args.compile and batch_size == args.batches[-1])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
