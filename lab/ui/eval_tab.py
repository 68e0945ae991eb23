"""Evaluate tab: score the loaded model on a dataset (or the loaded run's validation split).

The run is a background job (:func:`lab.evaluation.runner.start_evaluation`); this page
streams its progress (with an ETA) and keeps the job in per-session state, so "Stop" ends this page's run after the
current batch and the samples already answered are scored, saved and shown. Results
are the ones :func:`lab.evaluation.runner.run_evaluation` saves in the run folder; the
CLI prints the same numbers.
"""

from __future__ import annotations

import html
import time

import gradio as gr

from lab import paths
from lab.dataset import list_datasets
from lab.errors import LabError, localize
from lab.evaluation.endpoint import EndpointConfig, evaluate_endpoint
from lab.evaluation.report import bar_rows, metrics_table, sample_table, summary_line
from lab.evaluation.runner import (
    EvalResult,
    EvalSettings,
    list_results,
    load_result,
    run_evaluation,
    samples_from_dataset,
    samples_from_run,
    start_evaluation,
)
from lab.jobs import JobState
from lab.text import Msg
from lab.ui import i18n
from lab.ui.forms import Form, read_values
from lab.ui.i18n import t
from lab.ui.zerogpu import gpu

VAL_SPLIT = "(validation split of the loaded run)"
SAMPLE_HEADERS = ["id", "gain", "reference", "base", "tuned", "rouge_l base", "rouge_l tuned"]  # until a result
SORTS = {"gain": Msg("largest gain"), "loss": Msg("largest loss"), "id": Msg("id")}


def data_choices() -> list[str]:
    return [VAL_SPLIT] + [str(p) for p in list_datasets(include_variants=True)]


def load_samples(ctx, source: str):
    """The samples and a description of where they come from."""
    if not source or source == VAL_SPLIT:
        run_dir = ctx.handle.current_run_dir()
        if run_dir is None:
            raise LabError("The loaded model is not a training run; pick a dataset to evaluate on.")
        return samples_from_run(run_dir)
    return samples_from_dataset(source), source


def progress_html(done: int, total: int, eta: float | None, lang: str = "en") -> str:
    """A progress bar with the counts and the time left."""
    eta_text = (
        "…"
        if eta is None
        else time.strftime("%M:%S", time.gmtime(max(eta, 0)))
        if eta < 3600
        else f"{eta / 3600:.1f} h"
    )
    line = html.escape(localize(Msg("{done}/{total} samples · ETA {eta}", done=done, total=total, eta=eta_text), lang))
    return f'<progress value="{done}" max="{max(total, 1)}" style="width:100%"></progress><div>{line}</div>'


def result_outputs(result: EvalResult, sort: str = "gain", lang: str = "en"):
    """(summary, metrics table, bar rows, samples table) for the result widgets."""
    import pandas as pd

    headers, rows = metrics_table(result)
    sample_headers, sample_rows = sample_table(result, sort)
    bars = [{**row, "variant": i18n.columns([row["variant"]], lang)[0]} for row in bar_rows(result)]  # the legend
    chart = pd.DataFrame(bars, columns=["metric", "variant", "score"])
    return (
        localize(summary_line(result), lang),
        gr.update(value=rows, headers=i18n.columns(headers, lang)),
        chart,
        gr.update(value=sample_rows, headers=i18n.columns(sample_headers, lang)),
    )


def stream_job(evaluate, lang: str, sort: str):
    """Generator for a handler: yields (job, progress, summary, metrics, chart, samples, result) updates."""
    job = start_evaluation(evaluate)
    keep = gr.update()
    try:
        yield job, localize(Msg("Evaluating {total} samples…", total="…"), lang), keep, keep, keep, keep, None
        while not job.wait(0.5):
            if job.total:
                yield job, progress_html(job.done, job.total, job.eta_s, lang), keep, keep, keep, keep, None
    finally:
        job.stop()  # the page went away or the run was cancelled: end the worker after its batch
    if job.state is JobState.FAILED:
        raise LabError(job.message)  # dynamic template: the job's sentence, shown by failed() below
    result = job.result
    done = progress_html(len(result.samples), result.total, 0, lang)
    yield None, done, *result_outputs(result, sort, lang), result.summary_path


def evaluate(ctx, values: dict, lang="en"):
    """Handler of "Evaluate": the loaded model on the chosen data; ``values`` by name (source, sort, EvalSettings)."""
    settings = read_values(EvalSettings, values)
    data, where = load_samples(ctx, values["source"])

    def job(progress, stop):
        return run_evaluation(ctx.handle, data, settings, source=where, progress=progress, stop=stop)

    yield from stream_job(job, lang, values["sort"])


def evaluate_url(ctx, values: dict, lang="en"):
    """Handler of "Evaluate endpoint": an OpenAI-compatible server on the chosen data; ``values`` by name
    (source, sort, EndpointConfig's fields, and EvalSettings' max_new_tokens and limit)."""
    config = read_values(EndpointConfig, values)
    limit = read_values(EvalSettings, values).limit
    data, where = load_samples(ctx, values["source"])

    def job(progress, stop):
        return evaluate_endpoint(data, config, source=where, limit=limit or None, progress=progress, stop=stop)

    yield from stream_job(job, lang, values["sort"])


def failed(sentence: str):
    """What the outputs show when an evaluation is refused or fails: the sentence where the summary goes,
    no progress left behind, earlier results kept."""
    keep = gr.update()
    return None, "", f"⚠️ {sentence}", keep, keep, keep, keep


def saved_choices(ctx):
    """Saved results of the loaded run and of the workspace, newest first."""
    folders = [paths.workspace() / "eval"]
    run_dir = ctx.handle.current_run_dir()
    if run_dir is not None:
        folders.insert(0, run_dir / "eval")
    return gr.update(choices=[str(p) for folder in folders for p in list_results(folder)])


def show_saved(summary_path, order, lang="en"):
    return (None, "", *result_outputs(load_result(summary_path), order, lang), summary_path)


def resort(summary_path, order, lang="en"):
    if not summary_path:
        return gr.update()
    headers, rows = sample_table(load_result(summary_path), order)
    return gr.update(value=rows, headers=i18n.columns(headers, lang))


def _result_widgets():
    progress = gr.HTML()
    summary = gr.Markdown()
    with gr.Row():
        metrics = gr.Dataframe(label=t("Metrics"), interactive=False, scale=1)
        chart = gr.BarPlot(
            x="metric",
            y="score",
            color="variant",
            label=t("Base vs fine-tuned"),
            x_title=t("metric"),
            y_title=t("score"),
            color_title=t("model"),
            scale=2,
        )
    choices = [(t(label), name) for name, label in SORTS.items()]  # dynamic template: the Msgs of SORTS
    sort = gr.Radio(choices, value="gain", label=t("Sort samples by"))
    # Long answers are cut in the cells (a click on a row shows the whole sample), so every column stays in view.
    samples = i18n.table(
        SAMPLE_HEADERS,
        label=t("Samples (largest gain first; click a row to see it)"),
        interactive=False,
        wrap=True,
        max_chars=160,
    )
    with gr.Row():
        sample_image = gr.Image(label=t("Sample"), interactive=False, scale=1)
        sample_text = gr.Markdown()
    return progress, summary, metrics, chart, sort, samples, sample_image, sample_text


def create_tab(ctx) -> None:
    stop_state, shown = gr.State(None), gr.State(None)  # this page's stop switch; the result on screen
    form, endpoint = Form(EvalSettings), Form(EndpointConfig)
    with gr.Row():
        source = gr.Dropdown(
            data_choices(),
            value=str(paths.SAMPLE_DATASET),
            allow_custom_value=True,
            label=t("Data to evaluate on"),
            scale=3,
        )
        form.add("compare_base", scale=2)
    form.row("batch_size", "max_new_tokens", "limit")
    with gr.Row():
        run_btn = gr.Button(t("Evaluate", context="button"), variant="primary")
        stop_btn = gr.Button(t("Stop"), variant="stop")
    progress, summary, metrics, chart, sort, samples, sample_image, sample_text = _result_widgets()
    with gr.Accordion(t("Score an OpenAI-compatible endpoint (vLLM, or the labeler as upper bound)"), open=False):
        endpoint.row("base_url", "model", "api_key", "concurrency")
        endpoint_btn = gr.Button(t("Evaluate endpoint"))
    with gr.Accordion(t("Saved results"), open=False):
        with gr.Row():
            saved = gr.Dropdown([], label=t("Saved results"), allow_custom_value=True, scale=3)
            load_btn = gr.Button(t("Show"), scale=1)
    outputs = [stop_state, progress, summary, metrics, chart, samples, shown]

    # A LabError (no model, bad settings, a failed run) is one sentence where the summary goes (failed()).
    def on_run(*, lang, **values):
        yield from evaluate(ctx, values, lang)

    def on_endpoint(*, lang, **values):
        yield from evaluate_url(ctx, values, lang)

    def on_stop(job, lang):
        if job is None:
            return localize(Msg("No evaluation is running in this page."), lang)
        job.stop()
        return localize(Msg("Stopping after the current batch…"), lang)

    def on_select(summary_path, order, evt: gr.SelectData, lang):
        row = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        return show_sample(summary_path, order, row, lang)

    # The API's parameters, in this order.
    local_inputs = {"source": source, **form.named(), "sort": sort}
    endpoint_inputs = {"source": source, **endpoint.named(), **form.named("max_new_tokens", "limit"), "sort": sort}
    run_btn.click(
        gpu(i18n.handler(ctx, on_run, on_error=failed)), None, outputs, api_name="evaluate", inputs_kwargs=local_inputs
    )
    endpoint_btn.click(
        i18n.handler(ctx, on_endpoint, on_error=failed),
        None,
        outputs,
        api_name="evaluate_endpoint",
        inputs_kwargs=endpoint_inputs,
    )
    stop_btn.click(i18n.handler(ctx, on_stop), stop_state, summary, api_name="evaluate_stop")
    sort.change(i18n.handler(ctx, resort), [shown, sort], samples, api_name="evaluate_sort")
    source.focus(lambda: gr.update(choices=data_choices()), outputs=source, api_name="evaluate_data_choices")
    saved.focus(lambda: saved_choices(ctx), outputs=saved, api_name="evaluate_saved_list")
    load_btn.click(i18n.handler(ctx, show_saved, on_error=failed), [saved, sort], outputs, api_name="evaluate_load")
    samples.select(i18n.handler(ctx, on_select), [shown, sort], [sample_image, sample_text], api_name="evaluate_sample")


def show_sample(summary_path: str | None, order: str, row: int, lang: str = "en"):
    """The picture and the texts of the ``row``-th sample in the current order."""
    from lab.images import open_image

    if not summary_path:
        return None, ""
    result = load_result(summary_path)
    rows = sample_table(result, order)[1]
    if not 0 <= row < len(rows):
        return None, ""
    sample = next(s for s in result.samples if s["id"] == rows[row][0])
    try:
        image = open_image(sample["images"][0]) if sample["images"] else None
    except LabError:
        image = None
    reference = localize(Msg("reference"), lang)
    lines = [
        f"**{sample['id']}** · {html.escape(sample['prompt'])}",
        f"**{reference}**: {html.escape(sample['reference'])}",
    ]
    for variant, answer in sample["answers"].items():
        scores = ", ".join(f"{k} {v:.1f}" for k, v in sample["scores"][variant].items())
        lines.append(f"**{variant}**: {html.escape(answer) or '∅'}  \n<small>{scores}</small>")
    return image, "\n\n".join(lines)
