"""Evaluation results as tables and chart data, the same for the app, the CLI and the saved files.

For a base-vs-tuned result, :func:`metrics_table` has one row per metric
(``["bleu", 3.1, 42.0, 38.9]``: base, tuned, gain) and :func:`sample_table` one row per
sample, the samples the fine-tuning helped most first.
"""

from __future__ import annotations

from lab.evaluation.metrics import metric_names
from lab.evaluation.runner import GAIN_METRIC, EvalResult
from lab.text import Msg, join


def metrics_table(result: EvalResult) -> tuple[list[str], list[list]]:
    """Headers and rows: one row per metric, one column per variant (+ the gain when comparing)."""
    variants = result.variants
    first = result.metrics.get(variants[0], {}) if variants else {}
    comparing = "base" in variants and "tuned" in variants
    headers = ["metric", *variants] + (["gain"] if comparing else [])
    rows = []
    for name in metric_names(first):
        values = [round(result.metrics[v].get(name, 0.0), 2) for v in variants]
        if comparing:
            values.append(round(result.metrics["tuned"][name] - result.metrics["base"][name], 2))
        rows.append([name, *values])
    return headers, rows


def bar_rows(result: EvalResult) -> list[dict]:
    """Long-form rows for a grouped bar chart: ``{"metric", "variant", "score"}``."""
    return [
        {"metric": name, "variant": variant, "score": round(result.metrics[variant].get(name, 0.0), 2)}
        for variant in result.variants
        for name in metric_names(result.metrics.get(variant, {}))
    ]


def sample_table(result: EvalResult, sort: str = "gain") -> tuple[list[str], list[list]]:
    """One row per sample: id, gain, reference, each variant's answer and its ROUGE-L.

    ``sort`` "gain" puts the samples the fine-tuning helped most first (when comparing),
    "loss" those it hurt most, "id" keeps the dataset order.
    """
    variants = result.variants
    comparing = "base" in variants and "tuned" in variants
    headers = ["id"] + (["gain"] if comparing else []) + ["reference"] + variants
    headers += [f"{GAIN_METRIC} {v}" for v in variants]
    rows = []
    for sample in _sorted(result.samples, sort if comparing else "id"):
        row = [sample["id"]] + ([sample.get("gain", 0.0)] if comparing else []) + [sample["reference"]]
        row += [sample["answers"].get(v, "") for v in variants]
        row += [sample["scores"].get(v, {}).get(GAIN_METRIC, 0.0) for v in variants]
        rows.append(row)
    return headers, rows


def _sorted(samples: list[dict], sort: str) -> list[dict]:
    if sort == "gain":
        return sorted(samples, key=lambda s: -s.get("gain", 0.0))
    if sort == "loss":
        return sorted(samples, key=lambda s: s.get("gain", 0.0))
    return list(samples)


def summary_line(result: EvalResult) -> Msg:
    """One line: how many samples, how fast, stopped or not, where saved."""
    parts = [
        Msg(
            "{scored}/{total} samples scored in {seconds:.1f} s ({rate:g} samples/s)",
            scored=len(result.samples),
            total=result.total,
            seconds=result.seconds,
            rate=result.samples_per_s,
        )
    ]
    if result.stopped:
        parts.append(Msg("stopped early, the scored samples are kept"))
    if result.skipped:
        parts.append(Msg("{skipped} skipped (unreadable images or failed requests)", skipped=len(result.skipped)))
    if result.summary_path:
        parts.append(Msg("saved to {path}", path=result.summary_path))
    return join(Msg("; "), parts)
