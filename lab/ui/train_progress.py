"""What the Train tab shows of a run while it trains and after: the status line, the progress bar,
and the data of its plots (loss, learning rate, answer scores, GRPO's rewards), in the page's language."""

from __future__ import annotations

import html
import time

import gradio as gr

from lab.errors import localize
from lab.jobs import JobState
from lab.text import Msg
from lab.training import job as jobs
from lab.training.runs import curves, progress, reward_curves, score_curves


def _duration(seconds) -> str:
    if seconds is None:
        return "…"
    return time.strftime("%H:%M:%S" if seconds >= 3600 else "%M:%S", time.gmtime(max(float(seconds), 0)))


def _num(value, fmt: str) -> str:
    return "…" if value is None else fmt.format(value)


def status_outputs(run_dir, lang: str = "en"):
    """(progress bar HTML, status line, loss points, lr points, answer-score points) for the run in ``run_dir``."""
    if run_dir is None:
        return "", localize(Msg("No training run yet. Pick a preset and press Start."), lang), None, None, None
    p = progress(run_dir)
    job = jobs.current_job()
    mine = job is not None and str(job.run_dir) == str(run_dir)
    status = (job.state if mine else p.status).label
    line = localize(
        Msg(
            "**{name}** · {status} · step {step}/{total} · elapsed {elapsed} · ETA {eta} · {samples} "
            "samples/s · {tokens} tokens/s · loss {loss}",
            name=html.escape(str(run_dir).rsplit("/", 1)[-1]),
            status=status,
            step=p.step,
            total=p.total or "?",
            elapsed=_duration(p.elapsed_s),
            eta=_duration(p.eta_s),
            samples=_num(p.samples_per_s, "{:.2f}"),
            tokens=_num(p.tokens_per_s, "{:.0f}"),
            loss=_num(p.loss, "{:.4f}"),
        ),
        lang,
    )
    if mine and job.state is JobState.FAILED:
        line += f"  \n⚠️ {html.escape(localize(job.message, lang))}"
    elif p.message:
        line += f"  \n⚠️ {html.escape(localize(p.message, lang))}"
    bar = f'<progress value="{p.step}" max="{max(p.total or 1, 1)}" style="width:100%"></progress>'
    loss, lr = curves(run_dir)
    kl, _ = reward_curves(run_dir)  # a GRPO run draws its KL next to its loss
    named = [localize(SERIES[name], lang) for name in (("train", "kl") if kl else ("train", "eval"))]  # the legend
    return (
        bar,
        line,
        plot_points(_named(loss + kl, lang), tuple(named)),
        plot_points(_named(lr, lang)),
        plot_points(score_curves(run_dir)),
    )


SERIES = {"train": Msg("train"), "eval": Msg("eval"), "kl": Msg("kl"), "lr": Msg("learning rate")}


def _named(points: list[dict], lang: str) -> list[dict]:
    """The points with their series named in the page's language (the legend)."""
    return [{**point, "series": localize(SERIES[point["series"]], lang)} for point in points]


def reward_plot(run_dir):
    """The reward plot of a GRPO run (mean reward, and each reward when there are several); hidden for other runs."""
    _, rewards = reward_curves(run_dir) if run_dir is not None else ([], [])
    if not rewards:
        return gr.update(visible=False)
    series = tuple(dict.fromkeys(point["series"] for point in rewards))
    return gr.update(value=plot_points(rewards, series), visible=True)


def plot_points(rows: list, series: tuple[str, ...] = ()):
    """A LinePlot's data (columns step, value, series), or None before the first point.

    The browser builds a plot once, from its first data, and later data only moves the
    points: the column types and the series' colours come from that first data. So before
    the first point the plot stays empty (an empty frame drew later points with no height
    and no colour), and the first data names every series to come: each of ``series`` not
    there yet gets a point with no value, which is not drawn.
    """
    import pandas as pd

    if not rows:
        return None
    frame = pd.DataFrame(rows, columns=["step", "value", "series"])
    missing = [name for name in series if name not in set(frame["series"])]
    if missing:
        first = frame["step"].iloc[0]
        frame = pd.concat([frame, pd.DataFrame([[first, None, name] for name in missing], columns=frame.columns)])
    return frame.astype({"step": "int64", "value": "float64", "series": "str"}).reset_index(drop=True)
