"""Train tab: a form over ``TrainConfig``, a live loss plot (and a reward plot for GRPO runs), and the past runs.

The form's widgets are made from the config's fields (a preset fills them); Start builds
a ``TrainConfig`` and calls :func:`lab.training.job.start_training`, which trains in a
background thread of the app. A timer polls the run folder's ``metrics.jsonl``, so a
reloaded page finds the running job and its whole curve again. Logic lives in
:mod:`lab.training`; this module only reads widgets and formats results.
"""

from __future__ import annotations

from dataclasses import fields
from functools import partial

import gradio as gr

from lab import paths
from lab.dataset import dataset_stats, latest_dataset, list_datasets
from lab.errors import LabError, localize
from lab.jobs import JobState
from lab.model_sources import offered_models
from lab.text import Msg
from lab.train_config import TrainConfig, list_train_presets
from lab.training import job as jobs
from lab.training.forecast import CARDS
from lab.training.runs import (
    RUN_COLUMNS,
    config_text,
    find_run,
    list_runs,
    load_run_config,
    train_command,
)
from lab.ui import i18n
from lab.ui.forms import Form, read_values, shown_values
from lab.ui.i18n import t
from lab.ui.train_progress import reward_plot, status_outputs

MAIN_FIELDS = [
    "model",
    "dataset",
    "run_name",
    "method",
    "lora_targets",
    "train_vision",
    "train_merger",
    "train_language",
    "learning_rate",
    "num_epochs",
    "max_steps",
    "per_device_batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "num_gpus",
]
# The trainer's choice shows GRPO's own settings (lab/training/grpo.py) only when it is grpo.
GRPO_FIELDS = [
    "trainer",
    "rewards",
    "num_generations",
    "temperature",
    "max_new_tokens",
    "beta",
    "clip_epsilon",
    "num_iterations",
    "reward_pattern",
    "target_length",
]
MORE_FIELDS = [
    f.name for f in fields(TrainConfig) if f.name not in MAIN_FIELDS + GRPO_FIELDS and f.name != "output_dir"
]
FORM_FIELDS = MAIN_FIELDS + MORE_FIELDS + GRPO_FIELDS


def form_values(cfg: TrainConfig) -> list:
    """The form's values for ``cfg``, in :data:`FORM_FIELDS` order."""
    return shown_values(TrainConfig, cfg, FORM_FIELDS)


def config_from_form(values: dict) -> TrainConfig:
    """A ``TrainConfig`` from the form's values by field name; bad values raise ConfigError."""
    return read_values(TrainConfig, values, where=Msg("the form"))


def default_preset() -> str:
    from lab.models import gpu_present

    return "lora" if gpu_present() else "cpu_demo"


def watched_run(selected):
    """The run the page follows: the one picked in the runs list, else the app's current job."""
    if selected:
        return selected
    job = jobs.current_job()
    return str(job.run_dir) if job is not None else None


def runs_table():
    return [info.row() + [str(info.path)] for info in list_runs()]


def start(ctx, values: dict, resume_run: str | None = None, lang: str = "en") -> str:
    """Start a run from the form's values by name (or resume ``resume_run``); returns the message to show."""
    if resume_run is not None:
        job = jobs.start_training(load_run_config(find_run(resume_run)), ctx.handle, resume=True)
    else:
        job = jobs.start_training(config_from_form(values), ctx.handle)
    if job.state is JobState.QUEUED:
        return localize(
            Msg(
                "Queued {name}: {ahead} run(s) ahead; it starts when they end.",
                name=job.name,
                ahead=jobs.queue_position(job),
            ),
            lang,
        )
    return localize(Msg("Started {name}.", name=job.name), lang)


def forecast(values: dict, card: str | None, lang: str = "en") -> str:
    """The run's forecast for the form's values, on ``card`` (a name of ``CARDS``) or on this machine."""
    from lab.models import gpu_present
    from lab.training.fit import plan, report

    cfg = config_from_form(values)
    card = card if card in CARDS else None
    found = plan(cfg, "cuda" if card is None and gpu_present() else "cpu", card)
    return localize(report(found, cfg.model), lang).replace("\n", "  \n")


def stop(lang: str = "en") -> str:
    job = jobs.current_job()
    if job is None or not job.active:
        return localize(Msg("No training run is going on."), lang)
    job.stop()
    return localize(Msg("Stopping {name} after the current step…", name=job.name), lang)


def command(preset_name: str, values: dict, lang: str = "en"):
    """The CLI command of the form's settings, shown in a box that appears with it."""
    return gr.update(value=train_command(config_from_form(values), preset_name or "lora"), visible=True)


def poll(chosen, lang: str = "en"):
    """(progress bar, status line, loss points, lr points, answer-score points, log, reward plot) of the run this
    page follows."""
    run_dir = watched_run(chosen)
    job = jobs.current_job()
    log = "\n".join(job.log_tail(60)) if job is not None and str(job.run_dir) == str(run_dir) else ""
    return (*status_outputs(run_dir, lang), log, reward_plot(run_dir))


def _picked(run_dir: str | None) -> str:
    if not run_dir:
        raise LabError("Pick a run first.")
    return run_dir


def load_for_chat(ctx, run_dir: str | None, lang: str = "en") -> str:
    ctx.handle.load_run(_picked(run_dir))
    return localize(Msg("Loaded {name}; Evaluate and Chat now use it.", name=run_dir.rsplit("/", 1)[-1]), lang)


HERE = "here"  # the "Plan for" choice of this machine's own GPU (or CPU)
DATASET_HINT = Msg("Pick one or more; type path:0.5 to take half of a dataset, path:200 to take 200 samples.")


def _form(base: TrainConfig) -> Form:
    form = Form(TrainConfig, base)
    datasets = [str(p) for p in list_datasets(include_variants=True)]
    rows = [
        ("model", "dataset", "run_name", "method", "trainer"),
        ("lora_targets", "train_vision", "train_merger", "train_language", "num_gpus"),
        (
            "learning_rate",
            "num_epochs",
            "max_steps",
            "per_device_batch_size",
            "gradient_accumulation_steps",
            "max_length",
        ),
    ]
    extra = {
        "dataset": {"choices": datasets, "info": t(DATASET_HINT)},  # dynamic template: DATASET_HINT
        "model": {"choices": offered_models()},
        "per_device_batch_size": {"allow_custom_value": True},
    }
    for names in rows:
        with gr.Row():
            for name in names:
                form.add(name, **extra.get(name, {}))
    grpo = base.trainer == "grpo"
    with gr.Row():
        form.add("rewards", scale=2, visible=grpo)
        for name in GRPO_FIELDS[2:5]:
            form.add(name, visible=grpo)
    with gr.Row():
        for name in GRPO_FIELDS[5:]:
            form.add(name, visible=grpo)
    with gr.Accordion(t("More settings"), open=False):
        for first in range(0, len(MORE_FIELDS), 6):
            with gr.Row():
                for name in MORE_FIELDS[first : first + 6]:
                    form.add(name, **({"choices": datasets} if name == "val_dataset" else {}))
    return form


def _step_plot(label, y_title, **options) -> gr.LinePlot:
    """A plot of values against the step, one line per series. No height: with one, Gradio cuts the legend off."""
    return gr.LinePlot(
        x="step",
        y="value",
        color="series",
        label=label,
        x_title=t("step"),
        y_title=y_title,
        color_title=t("series"),
        **options,
    )


def create_tab(ctx) -> None:
    selected = gr.State(None)  # the run this page follows (None: the app's current job)
    preset = gr.Dropdown(list_train_presets(), value=default_preset(), label=t("Preset"))
    form = _form(TrainConfig.from_preset(default_preset()))
    widgets = form.named(*FORM_FIELDS)  # the API's parameters, in this order
    dataset_note = gr.Markdown()  # which dataset was preselected, and why
    with gr.Row():
        start_btn = gr.Button(t("Start training"), variant="primary")
        stop_btn = gr.Button(t("Stop (after this step)"), variant="stop")
        command_btn = gr.Button(t("Show command"))
        forecast_btn = gr.Button(t("Forecast memory and time"))
        card = gr.Dropdown(
            [(t("This machine"), HERE), *((c.name, name) for name, c in CARDS.items())],
            value=HERE,
            label=t("Plan for"),
            scale=1,
        )
    forecast_box = gr.Markdown()
    message = gr.Markdown()
    command_box = gr.Code(language="shell", label=t("Show command"), visible=False)  # shown with its first command
    bar, status = gr.HTML(), gr.Markdown(elem_id="train-status")
    with gr.Row():
        loss_plot = _step_plot(t("Loss"), t("Loss"))
        lr_plot = _step_plot(t("Learning rate"), t("Learning rate"))
        score_plot = _step_plot(t("Scores of the answers"), t("score (0-100)"))
        rewards_plot = _step_plot(t("Reward"), t("Reward"), visible=False)
    with gr.Accordion(t("Log"), open=False):
        log_box = gr.Textbox(lines=10, max_lines=20, interactive=False, label=t("Log"), show_label=False)
    with gr.Accordion(t("Past runs"), open=False):
        runs = i18n.table(RUN_COLUMNS + ["path"], value=runs_table(), interactive=False, wrap=True)
        with gr.Row():
            run_pick = gr.Dropdown([row[-1] for row in runs_table()], label=t("Run"), allow_custom_value=True, scale=3)
            refresh_btn = gr.Button(t("Refresh"), scale=1)
        with gr.Row():
            show_btn = gr.Button(t("Show curve and config"))
            resume_btn = gr.Button(t("Resume from last checkpoint"))
            load_btn = gr.Button(t("Load for Evaluate / Chat"))
        run_config = gr.Code(language="yaml", label=t("Config"))

    # A LabError (a bad setting, a busy model, no run picked) is one sentence in a toast (i18n.handler).
    def on_start(*, lang, **values):
        return start(ctx, values, lang=lang), None

    def on_command(preset, *, lang, **values):
        return command(preset, values, lang)

    def on_forecast(card, *, lang, **values):
        return forecast(values, card, lang)

    def on_refresh():
        table = runs_table()
        return table, gr.update(choices=[row[-1] for row in table])

    def on_show(run_dir, lang):
        found = find_run(_picked(run_dir))
        return str(found), config_text(found)

    def on_resume(run_dir, lang):
        return start(ctx, {}, resume_run=_picked(run_dir), lang=lang), run_dir

    preset.change(
        lambda name: form_values(TrainConfig.from_preset(name)), preset, list(widgets.values()), api_name="train_preset"
    )
    start_btn.click(
        i18n.handler(ctx, on_start), None, [message, selected], api_name="train_start", inputs_kwargs=widgets
    )
    stop_btn.click(i18n.handler(ctx, stop), None, message, api_name="train_stop")
    command_btn.click(
        i18n.handler(ctx, on_command),
        None,
        command_box,
        api_name="train_command",
        inputs_kwargs={"preset": preset, **widgets},
    )
    forecast_btn.click(
        i18n.handler(ctx, on_forecast, on_error=lambda sentence: sentence),
        None,
        forecast_box,
        api_name="train_forecast",
        inputs_kwargs={"card": card, **widgets},
    )
    gr.Timer(2.0).tick(
        i18n.handler(ctx, poll),
        selected,
        [bar, status, loss_plot, lr_plot, score_plot, log_box, rewards_plot],
        api_name="train_poll",
        show_progress="hidden",
    )
    grpo_widgets = [widgets[name] for name in GRPO_FIELDS[1:]]
    widgets["trainer"].change(
        lambda trainer: [gr.update(visible=trainer == "grpo")] * len(grpo_widgets),
        widgets["trainer"],
        grpo_widgets,
        api_name="train_trainer",
    )
    refresh_btn.click(on_refresh, None, [runs, run_pick], api_name="train_runs")
    show_btn.click(i18n.handler(ctx, on_show), run_pick, [selected, run_config], api_name="train_show_run")
    resume_btn.click(i18n.handler(ctx, on_resume), run_pick, [message, selected], api_name="train_resume")
    load_btn.click(i18n.handler(ctx, partial(load_for_chat, ctx)), run_pick, message, api_name="train_load_run")
    return i18n.handler(ctx, preselect_dataset), [widgets["dataset"]], [widgets["dataset"], dataset_note]


def preselect_dataset(current: str | None, lang: str = "en"):
    """On arrival: the newest labeled or imported dataset that has records replaces the bundled sample as the
    choice; the note says which one and why (and why a newer one without records is not it)."""
    choices = [str(p) for p in list_datasets(include_variants=True)]
    current = [current] if isinstance(current, str) else list(current or [])
    if current and current not in (["data/sample"], [str(paths.SAMPLE_DATASET)]):
        return gr.update(choices=choices), ""  # the person's own choice stays
    latest, newest = latest_dataset(), latest_dataset(with_records=False)
    value = [str(latest)] if latest else current
    notes = []
    if latest:
        notes.append(
            Msg(
                "Dataset preselected: {path}, the newest labeled or imported one ({n} records).",
                path=latest,
                n=dataset_stats(latest).records,
            )
        )
    if newest and newest != latest:
        notes.append(
            Msg("{path} has no records yet (none of its answers was usable), so it is not preselected.", path=newest)
        )
    return gr.update(choices=choices, value=value), "  \n".join(localize(note, lang) for note in notes)
