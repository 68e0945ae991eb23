"""Batched evaluation of the loaded model over a dataset or a run's validation split.

One pass answers every batch with the adapter off ("base") and then on ("tuned") when
asked to compare, so both answers of a sample come from the same weights in memory and
stopping half-way still leaves complete pairs. Results go into the run folder::

    checkpoints/<run>/eval/<name>.json    summary: settings, metrics per variant, timing
    checkpoints/<run>/eval/<name>.jsonl   one line per sample: answers, scores, gain

(``<workspace>/eval/`` when the model is not a run.) Variants: ``base`` (adapter off),
``tuned`` (adapter on) and ``model`` (a model without adapter).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from lab import paths
from lab.conversation import split_prompt
from lab.errors import BadImageError, ConfigError, DatasetError, LabError
from lab.evaluation.metrics import metric_names, score_answers
from lab.handle import ModelHandle, ModelState, adapter_names, adapter_scope
from lab.jobs import Job, start_job
from lab.settings import check, setting
from lab.text import Msg, msg_of, read_saved, saved_fields
from lab.training.runs import RunFolder

GAIN_METRIC = "rouge_l"  # the per-sample gain (tuned - base) the sample view sorts by

# progress(done, total, eta_seconds or None)
ProgressFn = Callable[[int, int, "float | None"], None]


@dataclass
class EvalSettings:
    """How to generate the answers that are scored."""

    batch_size: int = setting(8, label="Batch size", min=1, widget="slider", ui_max=64)
    """Samples generated together (left-padded); larger is faster until memory runs out."""
    max_new_tokens: int = setting(256, label="Max new tokens", min=1, widget="slider", ui_max=2048)
    """Longest answer in tokens."""
    temperature: float = setting(0.0, label="Temperature", min=0)
    """0 is greedy decoding (reproducible); above 0 samples."""
    top_p: float = setting(1.0, label="Top-p", above=0, max=1)
    """Nucleus sampling threshold when sampling."""
    compare_base: bool = setting(False, label="Compare with the base model (adapter off, then on)")
    """Also answer with the adapter turned off, for a base vs fine-tuned table."""
    limit: int = setting(0, label="Samples (0: all)", min=0)
    """Score only the first this many samples; 0 scores all."""
    name: str | None = setting(None, label="Name of the results")
    """Name of the results files; empty makes one from the data and the time."""

    def __post_init__(self):
        check(self)


@dataclass
class EvalSample:
    """A prompt (messages without the answer), its images (and videos) and the reference answer.

    A sample with ``objects`` (boxes, :mod:`lab.grounding`) is written for a model by
    :func:`for_model`, which also sets ``target``: the answer's boxes to score.
    """

    id: str
    messages: list[dict]
    images: list[str]
    reference: str
    videos: list[str] = field(default_factory=list)
    objects: dict | None = None
    target: Any = None  # lab.box_answers.BoxTarget


@dataclass
class EvalResult:
    name: str
    source: str
    variants: list[str]
    metrics: dict[str, dict[str, float]]
    samples: list[dict]
    total: int
    stopped: bool = False
    seconds: float = 0.0
    skipped: list[dict] = field(default_factory=list)  # {"id", "reason" (a Msg; saved as its English and its dict)}
    settings: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    summary_path: str | None = None

    @property
    def samples_per_s(self) -> float:
        return round(len(self.samples) / self.seconds, 3) if self.seconds else 0.0


# ---------------------------------------------------------------- what to evaluate on


def samples_from_records(records: list[dict]) -> list[EvalSample]:
    """Evaluation samples from dataset records whose image paths are absolute."""
    samples = []
    for i, record in enumerate(records):
        messages, answer = split_prompt(record.get("messages") or [])
        if answer is None:
            continue  # a record without an answer cannot be scored
        samples.append(
            EvalSample(
                str(record.get("id", i + 1)),
                messages,
                list(record.get("images") or []),
                answer,
                list(record.get("videos") or []),
                record.get("objects"),
            )
        )
    return samples


def for_model(sample: EvalSample, processor: Any = None, family: str | None = None) -> EvalSample:
    """``sample`` with its boxes written as ``family`` writes them (plain JSON without a processor)."""
    if not sample.objects:
        return sample
    from lab.grounding import eval_parts
    from lab.images import image_size

    try:
        sizes = [image_size(p) for p in sample.images]
    except BadImageError:
        return sample  # answering skips it with the reason
    messages, reference, target = eval_parts(
        sample.messages, sample.reference, sample.objects, sizes, processor, family
    )
    return replace(sample, messages=messages, reference=reference, target=target)


def samples_from_dataset(path: str | Path) -> list[EvalSample]:
    """Every answered record of a dataset folder or ``.jsonl`` file."""
    from lab.dataset import load_records

    samples = samples_from_records(load_records(paths.resolve(path), absolute_images=True))
    if not samples:
        raise DatasetError("{path} has no records with an assistant answer to score against.", path=path)
    return samples


def samples_from_run(run_dir: str | Path) -> tuple[list[EvalSample], str]:
    """The validation samples of a run (its ``val_dataset``, or the split it held out) and their source."""
    from lab.training.mix import mixed_splits, normalize_datasets

    config = RunFolder.read(run_dir).config
    if config.get("val_dataset"):
        return samples_from_dataset(config["val_dataset"]), str(config["val_dataset"])
    dataset, ratio = normalize_datasets(config.get("dataset")), float(config.get("val_ratio") or 0)
    if not dataset or ratio <= 0:
        raise ConfigError(
            "The run in {run_dir} held out no validation samples (val_ratio 0); pick a dataset to evaluate on.",
            run_dir=run_dir,
        )
    _, records, _ = mixed_splits(dataset, ratio, int(config.get("seed", 42)))  # as the run mixed and split them
    shown = dataset if isinstance(dataset, str) else ", ".join(dataset)
    return samples_from_records(records), f"{shown} (validation split)"


# ---------------------------------------------------------------- running


def choose_variants(loaded: Any, enabled: bool, compare_base: bool) -> list[str]:
    """Which answers to produce: ``base``/``tuned`` for a model with an adapter, else ``model``."""
    if not adapter_names(loaded):
        if compare_base:
            raise ConfigError("Comparing with the base model needs a LoRA adapter; load a LoRA run first.")
        return ["model"]
    if compare_base:
        return ["base", "tuned"]
    return ["tuned"] if enabled else ["base"]


class _MediaReader:
    """A sample's images and videos for the loaded model; videos within the run's budget (lab.video)."""

    def __init__(self, loaded: Any, run_config: dict | None):
        from lab.video import VideoBudget

        self.loaded = loaded
        self.budget = VideoBudget.of(run_config)

    def __call__(self, sample: EvalSample) -> tuple[list, list]:
        from lab.images import open_image
        from lab.video import VIDEO_FAMILIES, patch_size, read_video

        if sample.videos and self.loaded.family not in VIDEO_FAMILIES:
            raise DatasetError(
                "Sample {id} has a video, which {family} models cannot take.", id=sample.id, family=self.loaded.family
            )
        videos = [read_video(v, self.budget, patch_size(self.loaded.processor)) for v in sample.videos]
        return [open_image(p) for p in sample.images], videos


def run_evaluation(
    handle: ModelHandle,
    samples: list[EvalSample],
    settings: EvalSettings,
    *,
    source: str = "",
    progress: ProgressFn | None = None,
    stop: threading.Event | None = None,
    out_dir: str | Path | None = None,
) -> EvalResult:
    """Answer and score ``samples`` with the handle's model; saves the results and returns them.

    Holds the model for the whole run (training or chat are told it is busy). ``stop``
    ends the run after the current batch; the samples answered so far are scored and saved.
    """
    if settings.limit:
        samples = samples[: settings.limit]
    if not samples:
        raise DatasetError("There are no samples to evaluate.")
    start = time.perf_counter()
    with handle.use(ModelState.GENERATING) as loaded:
        variants = choose_variants(loaded, handle.adapter_enabled, settings.compare_base)
        run_dir = handle.current_run_dir()
        samples = [for_model(s, loaded.processor, loaded.family) for s in samples]
        reader = _MediaReader(loaded, RunFolder.read(run_dir).config if run_dir else None)
        answered, answers, skipped = _answer_all(loaded, samples, variants, settings, progress, stop, start, reader)
        model = {"name": loaded.name, "adapter": loaded.adapter if "model" not in variants else None}
    result = score_variants(answered, answers, variants)
    result.update(
        source=source,
        total=len(samples),
        skipped=skipped,
        model=model,
        stopped=len(answered) + len(skipped) < len(samples),
        seconds=round(time.perf_counter() - start, 3),
        settings=asdict(settings),
    )
    result = EvalResult(name=settings.name or _default_name(source), **result)
    folder = Path(out_dir) if out_dir else (run_dir / "eval" if run_dir else paths.workspace() / "eval")
    save_result(result, folder)
    return result


EVALUATION = Msg("Evaluation")  # what failed, when a run fails


def start_evaluation(evaluate: Callable[[ProgressFn, threading.Event], EvalResult]) -> Job:
    """Run ``evaluate(progress, stop)`` in a background :class:`~lab.jobs.Job` and return the job.

    ``evaluate`` is :func:`run_evaluation` or :func:`~lab.evaluation.endpoint.evaluate_endpoint`
    with its data bound: the job's progress is the samples answered, ``job.stop()`` ends the
    run after the current batch (what is answered is scored and saved), and ``job.result``
    is the :class:`EvalResult`.
    """
    return start_job(lambda job: evaluate(job.report, job.stop_event), Job("evaluation", EVALUATION))


def _answer_all(loaded, samples, variants, settings, progress, stop, start, read_media):
    from lab.generate import generate_batch

    answered: list[EvalSample] = []
    answers: dict[str, list[str]] = {v: [] for v in variants}
    skipped: list[dict] = []
    size = settings.batch_size
    for first in range(0, len(samples), size):
        if stop is not None and stop.is_set():
            break
        batch, images, videos = [], [], []
        for sample in samples[first : first + size]:
            try:
                sample_images, sample_videos = read_media(sample)
            except (BadImageError, DatasetError) as err:
                skipped.append(skip_row(sample.id, err))
                continue
            images.append(sample_images)
            videos.append(sample_videos)
            batch.append(sample)
        for variant in variants if batch else []:
            with adapter_scope(loaded, variant != "base"):
                generations = generate_batch(
                    loaded,
                    [s.messages for s in batch],
                    images,
                    max_new_tokens=settings.max_new_tokens,
                    temperature=settings.temperature,
                    top_p=settings.top_p,
                    videos=videos,
                )
            answers[variant].extend(g.text for g in generations)
        answered.extend(batch)
        if progress is not None:
            done = len(answered) + len(skipped)
            elapsed = time.perf_counter() - start
            progress(done, len(samples), elapsed / done * (len(samples) - done) if done else None)
    return answered, answers, skipped


def skip_row(sample_id: str, err: Exception) -> dict:
    """A skipped sample as kept in :attr:`EvalResult.skipped`: its id and why (a Msg, in every language)."""
    return {"id": sample_id, "reason": msg_of(err)}


def score_variants(answered: list[EvalSample], answers: dict[str, list[str]], variants: list[str]) -> dict:
    """Metrics per variant and one row per sample (answers, scores, gain), as saved."""
    references = [s.reference for s in answered]
    targets = [s.target for s in answered]
    metrics: dict[str, dict[str, float]] = {}
    per_variant: dict[str, list[dict]] = {}
    for variant in variants:
        metrics[variant], per_variant[variant] = score_answers(answers[variant], references, targets)
    rows = []
    for i, sample in enumerate(answered):
        scores = {v: per_variant[v][i] for v in variants}
        row = {
            "id": sample.id,
            "images": sample.images,
            "prompt": _last_user_text(sample.messages),
            "reference": sample.reference,
            "answers": {v: answers[v][i] for v in variants},
            "scores": scores,
        }
        if "base" in scores and "tuned" in scores:
            row["gain"] = round(scores["tuned"][GAIN_METRIC] - scores["base"][GAIN_METRIC], 4)
        rows.append(row)
    return {"variants": variants, "metrics": metrics, "samples": rows}


def _last_user_text(messages: list[dict]) -> str:
    users = [m["content"] for m in messages if m.get("role") == "user" and isinstance(m.get("content"), str)]
    return users[-1] if users else ""


def _default_name(source: str) -> str:
    stem = Path(source.split(" (")[0]).stem if source else "eval"
    if stem in ("data", ""):
        stem = Path(source.split(" (")[0]).parent.name or "eval"
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


# ---------------------------------------------------------------- saving and reading


def save_result(result: EvalResult, folder: str | Path) -> Path:
    """Write ``<name>.json`` (summary) and ``<name>.jsonl`` (samples) into ``folder``."""
    folder = paths.check_allowed(Path(folder), write=True)
    folder.mkdir(parents=True, exist_ok=True)
    summary_path = folder / f"{result.name}.json"
    result.summary_path = str(summary_path)
    summary = {k: v for k, v in asdict(result).items() if k != "samples"}
    summary["skipped"] = [{"id": skip["id"], **saved_fields("reason", skip["reason"])} for skip in result.skipped]
    summary.update(n_scored=len(result.samples), samples_per_s=result.samples_per_s, metric_order=_order(result))
    lines = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in result.samples)
    _write_atomic(folder / f"{result.name}.jsonl", lines)
    _write_atomic(summary_path, json.dumps(summary, ensure_ascii=False, indent=2) + "\n")
    return summary_path


def _order(result: EvalResult) -> list[str]:
    return metric_names(next(iter(result.metrics.values()), {}))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def load_result(summary_path: str | Path) -> EvalResult:
    """Read saved results back (summary + samples); on a shared deployment only the workspace's own."""
    summary_path = paths.check_allowed(Path(summary_path).expanduser())
    samples_path = paths.check_allowed(summary_path.with_suffix(".jsonl"))
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        samples = [json.loads(line) for line in samples_path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not isinstance(summary, dict) or not all(isinstance(s, dict) for s in samples):
            raise ValueError("not a JSON object")
        fields = {k: v for k, v in summary.items() if k in EvalResult.__dataclass_fields__}
        # Files from before the catalogs have the English reason only (and reason_zh): the English is shown.
        fields["skipped"] = [
            {"id": skip.get("id"), "reason": read_saved(skip, "reason")} for skip in fields.get("skipped") or []
        ]
        fields["samples"] = samples
        for sample in samples:
            sample["images"] = list(sample.get("images") or [])
    except (OSError, ValueError, TypeError, AttributeError) as err:  # JSONDecodeError is a ValueError
        raise LabError(
            "Cannot read the evaluation results {summary_path} ({err_type}).",
            summary_path=summary_path,
            err_type=type(err).__name__,
        ) from None
    for sample in fields["samples"]:  # the page shows a sample's picture: it must be one of the workspace's too
        sample["images"] = [str(paths.check_allowed(image)) for image in sample.get("images") or []]
    return EvalResult(**fields)


def list_results(folder: str | Path) -> list[Path]:
    """Saved evaluation summaries in ``folder`` (a run's ``eval/``), newest first."""
    folder = Path(folder)
    found = [p for p in folder.glob("*.json") if paths.is_allowed(p)] if folder.is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)
