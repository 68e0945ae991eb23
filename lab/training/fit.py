"""A run's forecast from its ``TrainConfig``, and the automatic batch size and gradient checkpointing.

:func:`plan` reads the model's ``config.json`` (never its weights: a model folder, the demo
model, a small table of known Hub models, or the Hub cache) and the dataset's lengths (text
counted from its characters, image tokens from each image's size as read from the file's header,
by the family's resize rule), then forecasts the run on a card (:mod:`lab.training.forecast`).
``per_device_batch_size: auto`` and ``gradient_checkpointing: auto`` pick the fastest forecast
that fits the card's free memory: recomputation off when the activations fit, the largest batch
that fits, with ``gradient_accumulation_steps`` changed so that batch x accumulation x GPUs stays
what was asked (``auto`` counts as a batch of 1). On the CPU, or for GRPO, ``auto`` is batch 1
with checkpointing on. :func:`resolve_auto` writes the choice into the config before the run's
``config.yaml`` is written, so the run folder holds numbers, not ``auto``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from lab.errors import ConfigError
from lab.text import Msg, join
from lab.training.forecast import (
    CARDS,
    GIB,
    Arch,
    Card,
    Forecast,
    Job,
    divisors,
    fits,
    forecast,
    largest_batch,
    with_batch,
)
from lab.training.sizes import Lengths, arch_of, dataset_lengths, read_model_config

AUTO = "auto"
BATCHES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)  # batches tried without an effective batch

# ---------------------------------------------------------------- the card


@dataclass(frozen=True)
class Where:
    """The card a run is planned for and its free memory (GiB); ``card`` None is the CPU."""

    card: Card | None
    free_gib: float | None


def card_named(name: str) -> Card:
    """The card called ``name``, as written or in any case (``H200`` is ``h200``)."""
    key = name.strip().lower()
    if key not in CARDS:
        raise ConfigError("Unknown card {name}; known cards: {names}.", name=name, names=", ".join(CARDS))
    return CARDS[key]


def this_machine(device: str, card: str | None = None) -> Where:
    """``card`` by name (planning: all its memory free), else the GPU of ``device`` and its free memory now."""
    if card:
        found = card_named(card)
        return Where(found, found.memory_gib)
    if not device.startswith("cuda"):
        return Where(None, None)
    import torch

    index = torch.device(device).index or 0
    free, total = torch.cuda.mem_get_info(index)
    name = torch.cuda.get_device_name(index)
    # Memory this process already holds (the app's loaded model) is counted by the forecast itself.
    free += torch.cuda.memory_reserved(index)
    known = next((c for c in CARDS.values() if c.name.lower() in name.lower() or name.lower() in c.name.lower()), None)
    tflops = known.tflops if known else 100.0  # an unknown card: a mid-range guess for the time forecast only
    return Where(Card(name, total / GIB, tflops, torch.cuda.is_bf16_supported()), free / GIB)


# ---------------------------------------------------------------- the plan


@dataclass
class Plan:
    """The forecast of a run: the batch, accumulation and checkpointing it trains with, and whether it fits."""

    arch: Arch
    lengths: Lengths
    where: Where
    result: Forecast
    accumulation: int
    chosen: tuple[str, ...]  # the fields that were auto
    fits: bool | None  # None on the CPU
    fixes: list  # (Msg, Forecast) that would make it fit

    @property
    def batch(self) -> int:
        return self.result.job.batch

    @property
    def checkpointing(self) -> bool:
        return self.result.job.checkpointing


def base_job(cfg: Any, arch: Arch, lengths: Lengths, card: Card | None) -> Job:
    """The :class:`Job` of ``cfg`` on ``card`` with batch 1 (the batch and checkpointing are set by the plan)."""
    full = tuple(p for p in ("language", "vision", "merger") if getattr(cfg, f"train_{p}"))
    if cfg.dtype == "float32" or (cfg.dtype == "auto" and card is None):
        size = 4
    else:
        size = 4 if cfg.method == "full" and (cfg.dtype == "float16" or card is not None and not card.bf16) else 2
    return Job(
        method=cfg.method,
        lora_rank=cfg.lora_rank,
        lora_targets=tuple(cfg.lora_targets),
        full_parts=full,
        dtype_bytes=size,
        quant_bits=cfg.quant_bits,
        double_quant=cfg.double_quant,
        batch=1,
        max_tokens=lengths.max_tokens,
        mean_tokens=lengths.mean_tokens,
        max_answer=lengths.max_answer,
        mean_answer=lengths.mean_answer,
        image_share=lengths.image_share,
        num_gpus=cfg.num_gpus,
        deepspeed=cfg.deepspeed,
        checkpointing=cfg.gradient_checkpointing is not False,
    )


def plan(cfg: Any, device: str = "cpu", card: str | None = None) -> Plan:
    """The forecast of ``cfg`` on ``card`` (by name) or on ``device``, with the automatic fields chosen."""
    arch = arch_of(read_model_config(cfg.model))
    lengths = dataset_lengths(cfg, arch)
    where = this_machine(device, card)
    job = base_job(cfg, arch, lengths, where.card)
    chosen = tuple(n for n in ("per_device_batch_size", "gradient_checkpointing") if getattr(cfg, n) == AUTO)
    wanted_batch = None if cfg.per_device_batch_size == AUTO else cfg.per_device_batch_size
    wanted_ckpt = None if cfg.gradient_checkpointing == AUTO else cfg.gradient_checkpointing
    accumulation = cfg.gradient_accumulation_steps
    if where.card is None or cfg.trainer == "grpo":  # the CPU, GRPO: today's values
        job = with_batch(job, wanted_batch or 1, True if wanted_ckpt is None else wanted_ckpt)
        return Plan(arch, lengths, where, forecast(arch, job, where.card), accumulation, chosen, None, [])
    if wanted_batch is None:
        per_gpu = accumulation  # what was asked: a batch of 1 x accumulation on each GPU
        job, accumulation = _fastest(
            arch, job, where, wanted_ckpt, per_gpu if cfg.auto_keeps_effective_batch else None, lengths.samples
        )
        if not cfg.auto_keeps_effective_batch:
            accumulation = cfg.gradient_accumulation_steps
    else:
        job = with_batch(job, wanted_batch, wanted_ckpt)
        if wanted_ckpt is None:
            off = with_batch(job, wanted_batch, False)
            job = off if fits(forecast(arch, off), where.free_gib) else with_batch(job, wanted_batch, True)
    result = forecast(arch, job, where.card)
    ok = fits(result, where.free_gib)
    return Plan(arch, lengths, where, result, accumulation, chosen, ok, [] if ok else fixes(arch, job, where))


def _fastest(arch: Arch, job: Job, where: Where, ckpt: bool | None, per_gpu: int | None, samples: int):
    """``(job, accumulation)``: the fastest batch and checkpointing that fit (batch 1 with checkpointing if none
    does). With ``per_gpu`` (the samples a GPU takes per optimizer step) the batch divides it."""
    candidates = divisors(per_gpu) if per_gpu else list(BATCHES)
    limit = max(1, min(per_gpu or samples, samples))
    best = None
    for option in [False, True] if ckpt is None else [ckpt]:
        batch = largest_batch(arch, with_batch(job, 1, option), where.free_gib, limit, candidates)
        if batch:
            result = forecast(arch, with_batch(job, batch, option), where.card)
            if best is None or result.tokens_per_s > best.tokens_per_s * 1.02:  # near-ties: less memory
                best = result
    job = best.job if best is not None else with_batch(job, 1, True if ckpt is None else ckpt)
    return job, (per_gpu // job.batch if per_gpu else 1)


def fixes(arch: Arch, job: Job, where: Where) -> list:
    """Changes that would make ``job`` fit, each with its forecast: checkpointing on, a smaller batch, QLoRA."""
    found = []
    if not job.checkpointing:
        on = forecast(arch, with_batch(job, job.batch, True), where.card)
        found.append((Msg("gradient_checkpointing: true"), on))
    for ckpt in dict.fromkeys([job.checkpointing, True]):
        smaller = largest_batch(arch, with_batch(job, 1, ckpt), where.free_gib, job.batch - 1) if job.batch > 1 else 0
        if smaller:
            found.append(
                (
                    Msg("per_device_batch_size: {batch}", batch=smaller),
                    forecast(arch, with_batch(job, smaller, ckpt), where.card),
                )
            )
            break
    if job.method == "lora":
        qlora = forecast(arch, replace(job, method="qlora", full_parts=()), where.card)
        found.append((Msg("method qlora"), qlora))
    return [(what, result) for what, result in found if fits(result, where.free_gib)]


def resolve_auto(cfg: Any, device: str, log: Callable[[str], None] = print) -> Plan | None:
    """Replace ``auto`` in ``cfg`` by the plan's choice (in place, before its config.yaml is written)."""
    if AUTO not in (cfg.per_device_batch_size, cfg.gradient_checkpointing):
        return None
    if not device.startswith("cuda") or cfg.trainer == "grpo":
        return _without_forecast(cfg)
    try:
        chosen = plan(cfg, device)
    except ConfigError as err:  # no config.json yet (a Hub model not downloaded)
        log(f"No automatic settings ({err}); batch 1 with gradient checkpointing")
        return _without_forecast(cfg)
    cfg.per_device_batch_size, cfg.gradient_checkpointing = chosen.batch, chosen.checkpointing
    cfg.gradient_accumulation_steps = chosen.accumulation
    log(
        f"Automatic settings: batch {chosen.batch} x {chosen.accumulation} accumulation, gradient checkpointing "
        f"{'on' if chosen.checkpointing else 'off'}; forecast peak {chosen.result.allocated_gib:.1f} GiB "
        f"of {chosen.where.free_gib:.1f} GiB free"
    )
    return chosen


def _without_forecast(cfg: Any) -> None:
    """``auto`` as it was before there was a forecast: batch 1, checkpointing on."""
    if cfg.per_device_batch_size == AUTO:
        cfg.per_device_batch_size = 1
    if cfg.gradient_checkpointing == AUTO:
        cfg.gradient_checkpointing = True


# ---------------------------------------------------------------- what a person reads


def _gib(value: float) -> str:
    return f"{value:.1f}"


def report(p: Plan, model: str) -> Msg:
    """The forecast in a few sentences, one a line."""
    r, parts = p.result, p.result.parts
    if p.where.card is None:
        head = Msg(
            "Forecast for {model} on the CPU: the GPU memory it would need; name a card to plan for one.", model=model
        )
    else:
        head = Msg(
            "Forecast for {model} on {card} ({free} GiB free).",
            model=model,
            card=p.where.card.name,
            free=_gib(p.where.free_gib),
        )
    settings = Msg(
        "Batch {batch} x {accumulation} accumulation x {gpus} GPU(s), gradient checkpointing {ckpt}{auto}.",
        batch=p.batch,
        accumulation=p.accumulation,
        gpus=r.job.num_gpus,
        ckpt=Msg("on") if p.checkpointing else Msg("off"),
        auto=Msg(" (chosen automatically)") if p.chosen else "",
    )
    memory = Msg(
        "Peak GPU memory {peak} GiB: weights {weights}, gradients and optimizer {trainable}, activations "
        "{activations}, logits {logits}; {needed} GiB with the CUDA context.",
        peak=_gib(r.allocated_gib),
        needed=_gib(r.needed_gib),
        **{k: _gib(v) for k, v in parts.items()},
    )
    lengths = Msg(
        "{samples} training samples, {mean} tokens on average, the longest {longest} ({share}% image tokens).",
        samples=p.lengths.samples,
        mean=round(p.lengths.mean_tokens),
        longest=p.lengths.max_tokens,
        share=round(100 * p.lengths.image_share),
    )
    lines = [head, settings, lengths, memory]
    if p.fits is not None:
        lines.append(_verdict(p))
    if r.tokens_per_s is not None:
        seconds = p.lengths.samples * r.job.mean_tokens / r.tokens_per_s
        lines.append(
            Msg(
                "About {tokens} tokens/s; one epoch in {minutes} min.",
                tokens=f"{r.tokens_per_s:,.0f}",
                minutes=f"{seconds / 60:.1f}",
            )
        )
    return join("\n", lines)


def _verdict(p: Plan) -> Msg:
    if p.fits:
        return Msg("It fits.")
    if not p.fixes:
        return Msg(
            "It does not fit, and neither checkpointing, a smaller batch nor QLoRA would; use a card with "
            "more memory, or several GPUs with DeepSpeed."
        )
    changes = [Msg("{change} ({peak} GiB)", change=what, peak=_gib(result.needed_gib)) for what, result in p.fixes]
    return Msg("It does not fit; it would with {changes}.", changes=join(Msg(", or "), changes))


def as_dict(p: Plan, model: str) -> dict:
    """The forecast as plain values (``--json``)."""
    r = p.result
    return {
        "model": model,
        "card": p.where.card.name if p.where.card else None,
        "free_gib": p.where.free_gib,
        "per_device_batch_size": p.batch,
        "gradient_accumulation_steps": p.accumulation,
        "gradient_checkpointing": p.checkpointing,
        "chosen_automatically": list(p.chosen),
        "memory_gib": {k: round(v, 3) for k, v in r.parts.items()},
        "peak_gib": round(r.allocated_gib, 3),
        "needed_gib": round(r.needed_gib, 3),
        "fits": p.fits,
        "tokens_per_s": r.tokens_per_s,
        "step_s": r.step_seconds,
        "samples": p.lengths.samples,
        "mean_tokens": p.lengths.mean_tokens,
        "max_tokens": p.lengths.max_tokens,
        "fixes": [{"change": str(what), "needed_gib": round(result.needed_gib, 3)} for what, result in p.fixes],
    }
