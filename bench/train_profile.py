"""Where a training step's time goes, in the lab's own training path, for the model and data of ``bench/train.py``.

    python bench/train_profile.py --batch 4 --steps 40 --variants stock lab pad64 compile --out DIR
    python bench/train_profile.py --batch 16 --steps 30 --variants compile-lm compile-noindex compile --profile compile

Each variant is a real :func:`lab.training.runner.run_training` run of the random
Qwen2.5-VL-3B (LoRA r 8 on the language model, vision frozen, 448x448 images) with some of
the lab's fast paths switched off, to see what each one is worth:

* ``stock``: the frozen tower keeps autograd, the model computes its 3-D positions and its tower's index on the
  GPU, batches are copied to the GPU with blocking copies (what a plain ``Trainer`` does);
* ``lab``: the lab's training path as it is;
* ``pad64``: ``lab`` with batches padded to a multiple of 64 tokens (fewer distinct shapes);
* ``compile``: ``lab`` with ``torch_compile: true`` (which pads to a multiple of 64 itself);
* ``compile-noindex``: ``compile`` with the vision tower computing its own index tensors on the
  GPU (:mod:`lab.training.tower_index` off);
* ``compile-lm``: ``compile-noindex`` with the decoder layers compiled and the vision blocks not;
* ``compile-waits``: ``compile`` with the picture grids on the GPU, transformers' placeholder check
  and its causal mask built from the padding mask (each reads a value back from the GPU every step).

It prints, per variant, the median and slowest step time after warm-up, tokens/s and peak
memory, and for the variants named by ``--profile`` a ``torch.profiler`` table of three
steps after the measured ones (GPU busy time by kind of kernel, kernels and host syncs per step), also
written to DIR, and where in the Python code the host waited for the GPU. ``--check`` then
compares the adapters' gradients of one batch under compiled and eager layers (:func:`check_compiled_gradients`).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import train as bench  # noqa: E402  (bench/train.py)

VARIANTS = ("stock", "lab", "pad64", "compile", "compile-noindex", "compile-lm", "compile-waits")
KERNEL_KINDS = (  # the first kind whose words a kernel's name contains
    ("matrix products", ("gemm", "nvjet", "cutlass", "xmma", "cublas", "splitk")),
    ("attention", ("flash", "fmha", "attention", "sdpa")),
    ("dropout", ("dropout",)),
    ("Inductor (fused)", ("triton",)),
    ("elementwise (eager)", ("elementwise", "vectorized", "unrolled")),
)


@contextlib.contextmanager
def variant_switches(name: str):
    """Switch off the fast paths ``name`` does without (module attributes, restored afterwards)."""
    from lab.training import collator, speed, tower_index, trainer

    saved = {
        k: getattr(trainer, k)
        for k in (
            "frozen_towers_without_grad",
            "RopeIndex",
            "training_arguments",
            "TowerIndex",
            "takes_ready_causal_mask",
            "host_checks",
        )
    }
    saved_grids = tower_index.TowerIndex.host_grids
    saved_collator, saved_compile = collator.LossCollator, speed.compile_blocks
    try:
        if name in ("stock", "compile-noindex", "compile-lm"):
            trainer.TowerIndex = type("NoIndex", (), {"of": staticmethod(lambda model: None)})
        if name == "compile-waits":
            trainer.takes_ready_causal_mask = lambda model: False
            trainer.host_checks = lambda index: lambda: None
            tower_index.TowerIndex.host_grids = lambda self, batch: None
        if name == "compile-lm":
            speed.compile_blocks = lambda model: saved_compile(model, vision=False)
        if name == "stock":
            trainer.frozen_towers_without_grad = lambda model: lambda: None
            trainer.RopeIndex = type("NoRope", (), {"of": staticmethod(lambda model: None)})
            plain_args = saved["training_arguments"]

            def blocking(*a, **kw):
                args = plain_args(*a, **kw)
                args.accelerator_config.non_blocking = False
                return args

            trainer.training_arguments = blocking
        if name == "pad64":
            base = saved_collator
            collator.LossCollator = type(
                "Pad64",
                (base,),
                {"__init__": lambda self, pad_id, multiple=1, rope=None: base.__init__(self, pad_id, 64, rope)},
            )
        yield
    finally:
        for k, v in saved.items():
            setattr(trainer, k, v)
        collator.LossCollator = saved_collator
        speed.compile_blocks = saved_compile
        tower_index.TowerIndex.host_grids = saved_grids


def step_clock(times: list):
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter())

    return StepClock()


def profiler_callback(first_step: int, steps: int, out: Path, label: str, summary: dict):
    """Profile steps ``first_step .. first_step + steps - 1`` and write the tables under ``out``."""
    import torch
    from transformers import TrainerCallback

    class Profile(TrainerCallback):
        prof = None

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == first_step - 1:
                torch.cuda.synchronize()
                self.prof = torch.profiler.profile(
                    activities=[torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA],
                    with_stack=True,
                )
                self.prof.__enter__()
                self.began = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if self.prof is None or state.global_step != first_step + steps - 1:
                return
            torch.cuda.synchronize()
            wall = time.perf_counter() - self.began
            self.prof.__exit__(None, None, None)
            averages = self.prof.key_averages()
            (out / f"profile_{label}_cuda.txt").write_text(
                averages.table(sort_by="self_device_time_total", row_limit=60)
            )
            (out / f"profile_{label}_cpu.txt").write_text(averages.table(sort_by="self_cpu_time_total", row_limit=60))
            kernels = [e for e in self.prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
            kinds: dict[str, float] = {}
            for e in kernels:
                kind = next((k for k, words in KERNEL_KINDS if any(w in e.name.lower() for w in words)), "other")
                kinds[kind] = kinds.get(kind, 0.0) + e.time_range.elapsed_us() / 1e6 / steps
            summary.update(
                gpu_by_kind=dict(sorted(kinds.items(), key=lambda kv: -kv[1])),
                wall_per_step=wall / steps,
                gpu_busy_per_step=sum(e.time_range.elapsed_us() for e in kernels) / 1e6 / steps,
                kernels_per_step=len(kernels) / steps,
                syncs_per_step=sum(a.count for a in averages if "Synchronize" in a.key) / steps,
                syncs=sync_places(self.prof.events(), steps),
            )
            self.prof = None

    return Profile()


def sync_places(events, steps: int) -> dict[str, float]:
    """Where the host waited for the GPU, per step: the innermost Python frames outside torch around each
    ``cudaStreamSynchronize`` / ``cudaDeviceSynchronize`` (the profiler's Python events that enclose it in
    time on its thread), with their counts."""
    python = [e for e in events if "): " in e.name and "torch/" not in e.name and "<built-in" not in e.name]
    places: dict[str, float] = {}
    for event in events:
        if "Synchronize" not in event.name:
            continue
        start, end = event.time_range.start, event.time_range.end
        around = [
            e for e in python if e.thread == event.thread and e.time_range.start <= start and e.time_range.end >= end
        ]
        around.sort(key=lambda e: -e.time_range.start)  # innermost first
        where = " <- ".join(e.name.rsplit("/", 1)[-1] for e in around[:3]) or event.name
        places[where] = places.get(where, 0.0) + 1 / steps
    return dict(sorted(places.items(), key=lambda kv: -kv[1]))


def run_variant(loaded, dataset: Path, batch: int, steps: int, name: str, out: Path, profile: bool) -> dict:
    from lab.training.setup import finish_model, unwrap_adapters

    times: list[float] = []
    summary: dict = {}
    callbacks = [step_clock(times)]
    if profile:  # after the measured steps, so that the profiler's own cost stays out of the figures
        callbacks.append(profiler_callback(steps + 1, 3, out, f"{name}_b{batch}", summary))
    cfg = bench.bench_config(
        dataset, batch, steps + 3 * profile, f"{name}-b{batch}", torch_compile=name.startswith("compile")
    )
    from lab.training.runner import run_training

    with variant_switches(name):
        run_training(cfg, loaded=loaded, log=lambda line: print("   ", line), callbacks=callbacks)
    loaded.model = unwrap_adapters(loaded.model)
    finish_model(loaded.model)
    from lab.paths import runs_dir

    steps_s = [b - a for a, b in zip(times, times[1:steps])][bench.WARMUP_STEPS :]
    return {
        "variant": name,
        "batch": batch,
        "median_step_s": statistics.median(steps_s),
        "slowest_step_s": max(steps_s),
        **bench.steady_state(runs_dir() / f"{name}-b{batch}", until=steps),
        **summary,
    }


def check_compiled_gradients(loaded, dataset: Path, batch: int) -> list[tuple[str, float]]:
    """Relative differences between the LoRA gradients of one batch under eager and compiled layers.

    Dropout draws a new mask every call, so a checkpointed layer must draw the same mask again
    when it recomputes its forward pass in the backward one; a compiled layer that drew another
    would still train, only worse. Compiled layers use PyTorch's random numbers (see
    :func:`lab.training.speed.compile_blocks`), so every pair below must agree to bf16 rounding,
    dropout or not, checkpointed or not.
    """
    import torch
    import torch.nn.functional as F

    from lab.training.collator import LossCollator, RopeIndex, TrainDataset
    from lab.training.data import build_data
    from lab.training.setup import prepare_model
    from lab.training.speed import (
        compile_blocks,
        frozen_towers_without_grad,
        skip_adapter_input_cast,
        use_grouped_vision_attention,
    )

    cfg = bench.bench_config(dataset, batch, 1, "check")
    processor = loaded.processor
    data = build_data(cfg, processor, lambda _: None)
    model = prepare_model(loaded.model, cfg).model
    model.train()
    for switch in (use_grouped_vision_attention, skip_adapter_input_cast, frozen_towers_without_grad):
        switch(model)
    items = TrainDataset(data.train[:batch], processor, torch.bfloat16)
    collate = LossCollator(processor.tokenizer.pad_token_id, 64, RopeIndex.of(model))
    device = next(model.parameters()).device
    full = {k: v.to(device) for k, v in collate([items[i] for i in range(batch)]).items()}
    inputs = {k: v for k, v in full.items() if not k.startswith("loss_") and k != "labels"}
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(checkpointing: bool, dropout: float):
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = dropout
        if checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_disable()
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            logits = model(**inputs, use_cache=False, logits_to_keep=full["loss_positions"]).logits
            picked = logits.reshape(-1, logits.shape[-1]).index_select(0, full["loss_index"]).float()
            F.cross_entropy(picked, full["loss_targets"]).backward()
        return torch.cat([p.grad.float().flatten() for p in params])

    def rel(a, b) -> float:
        return ((a - b).norm() / b.norm()).item()

    eager = {(c, d): grads(c, d) for c in (True, False) for d in (0.05, 0.0)}
    noise = rel(grads(True, 0.0), eager[True, 0.0])
    compile_blocks(model)
    compiled = {(c, d): grads(c, d) for c in (True, False) for d in (0.05, 0.0)}
    return [
        ("eager, same call twice (no dropout)", noise),
        ("eager, checkpointed vs not (dropout 0.05)", rel(eager[True, 0.05], eager[False, 0.05])),
        ("compiled, checkpointed vs not (dropout 0.05)", rel(compiled[True, 0.05], compiled[False, 0.05])),
        ("compiled vs eager, checkpointed (no dropout)", rel(compiled[True, 0.0], eager[True, 0.0])),
        ("compiled vs eager, not checkpointed (no dropout)", rel(compiled[False, 0.0], eager[False, 0.0])),
        ("compiled vs eager, checkpointed (dropout 0.05)", rel(compiled[True, 0.05], eager[True, 0.05])),
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument(
        "--profile", nargs="*", default=[], help="variants to profile (3 steps after the measured ones)"
    )
    parser.add_argument("--check", action="store_true", help="last, compare compiled and eager gradients of one batch")
    parser.add_argument("--out", default=".")
    args = parser.parse_args(argv)

    import torch

    if not torch.cuda.is_available():
        print("bench/train_profile.py needs a CUDA GPU; none is visible.")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="lab-profile-"))
    os.environ["LAB_HOME"] = str(work / "home")
    processor = bench.make_processor()
    dataset = bench.make_dataset(work / "data", processor, samples=args.batch * args.steps + 64)
    loaded = bench.loaded_model(bench.build_model("3b", processor), processor, "random-qwen2.5-vl-3b")
    print(f"{torch.cuda.get_device_name()}, {os.cpu_count()} CPUs, torch {torch.__version__}", flush=True)
    rows = []
    for name in args.variants:
        try:
            rows.append(run_variant(loaded, dataset, args.batch, args.steps, name, out, name in args.profile))
        except Exception as err:  # one failed variant must not lose the others' figures
            print(f"{name} failed: {type(err).__name__}: {err}", flush=True)
            continue
        print(_row(rows[-1]), flush=True)
    print("\n".join(_row(r) for r in rows))
    if args.check:
        for what, value in check_compiled_gradients(loaded, dataset, args.batch):
            print(f"  gradient difference, {what}: {value:.2e}")
    return 0


def _row(r: dict) -> str:
    line = (
        f"{r['variant']:>8} batch {r['batch']:>2}: step {r['median_step_s']:.3f}s (slowest {r['slowest_step_s']:.3f}s)"
        f"  {r['tokens_per_s']:7.0f} tokens/s  peak {r['peak_gib']:5.1f} GiB  loss {r['loss']:.3f}"
    )
    if "gpu_busy_per_step" in r:
        line += (
            f"  | profiled: {r['wall_per_step']:.3f}s/step, GPU busy {r['gpu_busy_per_step']:.3f}s, "
            f"{r['kernels_per_step']:.0f} kernels, {r['syncs_per_step']:.1f} syncs per step\n      GPU time by kind: "
            + ", ".join(f"{kind} {seconds:.3f}s" for kind, seconds in r["gpu_by_kind"].items())
        )
    for where, count in r.get("syncs", {}).items():
        line += f"\n      host waits {count:.1f}x a step at {where}"
    return line


if __name__ == "__main__":
    raise SystemExit(main())
