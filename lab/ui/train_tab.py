"""Train tab: a form over ``TrainConfig``, a live loss plot, and the past runs.

The form's widgets are made from the config's fields (a preset fills them); Start builds
a ``TrainConfig`` and calls :func:`lab.training.job.start_training`, which trains in a
background thread of the app. A timer polls the run folder's ``metrics.jsonl``, so a
reloaded page finds the running job and its whole curve again. Logic lives in
:mod:`lab.training`; this module only reads widgets and formats results.
"""

from __future__ import annotations

import html
import inspect
import time
from dataclasses import fields

import gradio as gr

from lab import paths
from lab.dataset import latest_dataset, list_datasets
from lab.errors import LabError, localize
from lab.text import Msg
from lab.train_config import CHOICES, TrainConfig, list_train_presets
from lab.training import job as jobs
from lab.training.runs import RUN_COLUMNS, curves, list_runs, load_run_config, progress, train_command
from lab.ui import i18n
from lab.ui.i18n import request_lang, t

MAIN_FIELDS = ["model", "dataset", "run_name", "method", "lora_targets", "train_vision", "train_merger",
               "train_language", "learning_rate", "num_epochs", "max_steps", "per_device_batch_size",
               "gradient_accumulation_steps", "max_length", "num_gpus"]  # fmt: skip
MORE_FIELDS = [f.name for f in fields(TrainConfig) if f.name not in MAIN_FIELDS and f.name != "output_dir"]
FORM_FIELDS = MAIN_FIELDS + MORE_FIELDS

_FIELD_LABELS = {
    "model": ("Model (Hub id, folder, or demo)", "模型（Hub ID、文件夹或 demo）"),
    "dataset": ("Dataset", "数据集"), "val_dataset": ("Validation dataset (optional)", "验证集（可选）"),
    "run_name": ("Run name (empty: automatic)", "训练名称（留空自动生成）"),
    "system": ("System prompt for every sample (empty: keep the samples')", "统一的系统提示词（留空：保留样本自带的）"),
    "method": ("Method", "方法"), "lora_rank": ("LoRA rank", "LoRA 秩"), "lora_alpha": ("LoRA alpha", "LoRA alpha"),
    "lora_dropout": ("LoRA dropout", "LoRA dropout"), "use_rslora": ("rsLoRA", "rsLoRA"), "use_dora": ("DoRA", "DoRA"),
    "loraplus_lr_ratio": ("LoRA+ learning-rate ratio (empty: off)", "LoRA+ 学习率倍数（留空：关闭）"),
    "lora_targets": ("LoRA on", "LoRA 作用于"), "train_vision": ("Train the vision tower (full)", "全量训练视觉编码器"),
    "train_merger": ("Train the merger (full)", "全量训练连接层"), "train_language": ("Train the language model (full)", "全量训练语言模型"),
    "quant_bits": ("QLoRA bits", "QLoRA 位数"), "double_quant": ("Double quantization", "双重量化"),
    "quant_compute_dtype": ("QLoRA compute dtype", "QLoRA 计算精度"), "dtype": ("Precision", "精度"),
    "learning_rate": ("Learning rate", "学习率"), "num_epochs": ("Epochs", "轮数"),
    "max_steps": ("Max steps (-1: use epochs)", "最大步数（-1：按轮数）"), "per_device_batch_size": ("Batch size per GPU", "每卡批大小"),
    "gradient_accumulation_steps": ("Gradient accumulation", "梯度累积"), "max_length": ("Max length (tokens)", "最大长度（token）"),
    "overlong": ("Samples over max length", "超长样本"), "warmup_ratio": ("Warmup ratio", "预热比例"),
    "lr_scheduler": ("Scheduler", "学习率调度"), "weight_decay": ("Weight decay", "权重衰减"),
    "max_grad_norm": ("Max grad norm", "梯度裁剪"), "seed": ("Seed", "随机种子"), "val_ratio": ("Validation ratio", "验证集比例"),
    "gradient_checkpointing": ("Gradient checkpointing", "梯度检查点"), "torch_compile": ("torch.compile (GPU)", "torch.compile（GPU）"),
    "min_pixels": ("Min pixels per image", "每张图最少像素"), "max_pixels": ("Max pixels per image", "每张图最多像素"),
    "logging_steps": ("Log every N steps", "每 N 步记录"), "eval_steps": ("Evaluate every N steps", "每 N 步验证"),
    "save_steps": ("Save every N steps", "每 N 步保存"), "save_total_limit": ("Checkpoints to keep", "保留的检查点数"),
    "report_to": ("Also log to", "同时记录到"), "num_gpus": ("GPUs", "GPU 数"), "deepspeed": ("DeepSpeed", "DeepSpeed"),
    "identity": ("Add self-identity samples", "加入自我认知样本"),
    "model_name": ("Model name (中文, English)", "模型名称（中文, English）"),
    "model_author": ("Model author (中文, English)", "模型作者（中文, English）"),
}  # fmt: skip


def _field_widget(name: str, value):
    label = t(f"train.f.{name}") if name in _FIELD_LABELS else name
    if name == "dataset" or name == "val_dataset":
        choices = [str(p) for p in list_datasets(include_variants=True)]
        return gr.Dropdown(choices, value=value, allow_custom_value=True, label=label)
    if name == "lora_targets":
        return gr.CheckboxGroup([(t(f"train.part.{part}"), part) for part in ("language", "vision", "merger")], value=value,
                                label=label)
    if name in CHOICES:
        choices = [c if c is not None else "none" for c in CHOICES[name]]
        return gr.Dropdown(choices, value="none" if value is None else value, label=label)
    if isinstance(value, bool):
        return gr.Checkbox(value=value, label=label)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return gr.Number(value=value, label=label)
    if isinstance(value, list):
        return gr.Textbox(value=", ".join(value), label=label)
    return gr.Textbox(value="" if value is None else str(value), label=label)


def form_values(cfg: TrainConfig) -> list:
    """The form's values for ``cfg``, in :data:`FORM_FIELDS` order."""
    values = []
    for name in FORM_FIELDS:
        value = getattr(cfg, name)
        if name in CHOICES and value is None:
            value = "none"
        elif isinstance(value, list) and name != "lora_targets":
            value = ", ".join(value)
        elif value is None:
            value = "" if name not in ("loraplus_lr_ratio", "min_pixels", "max_pixels", "save_total_limit") else None
        values.append(value)
    return values


def config_from_form(values: list) -> TrainConfig:
    """A ``TrainConfig`` from the form's values (in :data:`FORM_FIELDS` order); bad values raise ConfigError."""
    data = dict(zip(FORM_FIELDS, values))
    if data.get("deepspeed") == "none":
        data["deepspeed"] = None
    return TrainConfig.from_dict(data, "the form")


def default_preset() -> str:
    import torch

    return "lora" if torch.cuda.is_available() else "cpu_demo"


def _duration(seconds) -> str:
    if seconds is None:
        return "…"
    return time.strftime("%H:%M:%S" if seconds >= 3600 else "%M:%S", time.gmtime(max(float(seconds), 0)))


def _num(value, fmt: str) -> str:
    return "…" if value is None else fmt.format(value)


def status_outputs(run_dir, lang: str = "en"):
    """(progress bar HTML, status line, loss points, lr points) for the run in ``run_dir``."""
    if run_dir is None:
        return "", localize(Msg("No training run yet. Pick a preset and press Start."), lang), None, None
    p = progress(run_dir)
    job = jobs.current_job()
    status = job.status if job is not None and str(job.run_dir) == str(run_dir) else p.status
    status = i18n.text(f"train.state.{status}", lang) if f"train.state.{status}" in STRINGS else status
    line = localize(Msg("**{name}** · {status} · step {step}/{total} · elapsed {elapsed} · ETA {eta} · {samples} "
                        "samples/s · {tokens} tokens/s · loss {loss}",
                        name=html.escape(str(run_dir).rsplit("/", 1)[-1]), status=status,
                        step=p.step, total=p.total or "?", elapsed=_duration(p.elapsed_s), eta=_duration(p.eta_s),
                        samples=_num(p.samples_per_s, "{:.2f}"), tokens=_num(p.tokens_per_s, "{:.0f}"),
                        loss=_num(p.loss, "{:.4f}")), lang)  # fmt: skip
    if job is not None and str(job.run_dir) == str(run_dir) and job.status == "failed":
        line += f"  \n⚠️ {html.escape(localize(job.message, lang))}"
    elif p.message:
        line += f"  \n⚠️ {html.escape(localize(p.message, lang))}"
    bar = f'<progress value="{p.step}" max="{max(p.total or 1, 1)}" style="width:100%"></progress>'
    loss, lr = curves(run_dir)
    return bar, line, plot_points(loss, ("train", "eval")), plot_points(lr)


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


def watched_run(selected):
    """The run the page follows: the one picked in the runs list, else the app's current job."""
    if selected:
        return selected
    job = jobs.current_job()
    return str(job.run_dir) if job is not None else None


def runs_table():
    return [info.row() + [str(info.path)] for info in list_runs()]


def _named(fn, names: list[str]):
    """Give ``fn(request, *values)`` a signature naming each form field, so the API has named parameters."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [inspect.Parameter("request", kind, annotation=gr.Request)]
    params += [inspect.Parameter(n, kind) for n in names]
    fn.__signature__ = inspect.Signature(params)
    fn.__annotations__ = {"request": gr.Request}  # how Gradio spots the request parameter
    return fn


def start(ctx, lang: str, values: list, resume_run: str | None = None) -> str:
    """Start a run from the form's values (or resume ``resume_run``); returns the message to show."""
    try:
        if resume_run is not None:
            job = jobs.start_training(load_run_config(resume_run), ctx.handle, resume=True)
        else:
            job = jobs.start_training(config_from_form(values), ctx.handle)
    except LabError as err:
        raise gr.Error(localize(err, lang)) from None
    if job.status == "queued":
        return localize(Msg("Queued {name}: {ahead} run(s) ahead; it starts when they end.",
                            name=job.name, ahead=jobs.queue_position(job)), lang)
    return localize(Msg("Started {name}.", name=job.name), lang)


def stop(lang: str) -> str:
    job = jobs.current_job()
    if job is None or not job.active:
        return localize(Msg("No training run is going on."), lang)
    job.stop()
    return localize(Msg("Stopping {name} after the current step…", name=job.name), lang)


def command(preset_name: str, values: list, lang: str = "en"):
    """The CLI command of the form's settings, shown in a box that appears with it."""
    try:
        return gr.update(value=train_command(config_from_form(values), preset_name or "lora"), visible=True)
    except LabError as err:
        raise gr.Error(localize(err, lang)) from None


def poll(chosen, lang: str):
    """(progress bar, status line, loss points, lr points, log) of the run this page follows."""
    run_dir = watched_run(chosen)
    job = jobs.current_job()
    log = "\n".join(job.log_lines[-60:]) if job is not None and str(job.run_dir) == str(run_dir) else ""
    return (*status_outputs(run_dir, lang), log)


def load_for_chat(ctx, lang: str, run_dir: str | None) -> str:
    if not run_dir:
        raise gr.Error(localize(Msg("Pick a run first."), lang))
    try:
        ctx.handle.load_run(run_dir)
    except LabError as err:
        raise gr.Error(localize(err, lang)) from None
    return localize(Msg("Loaded {name}; Evaluate and Chat now use it.", name=run_dir.rsplit("/", 1)[-1]), lang)


def _form_widgets(base: TrainConfig) -> dict:
    widgets = {}
    rows = [("model", "dataset", "run_name", "method"),
            ("lora_targets", "train_vision", "train_merger", "train_language", "num_gpus"),
            ("learning_rate", "num_epochs", "max_steps", "per_device_batch_size", "gradient_accumulation_steps",
             "max_length")]  # fmt: skip
    for names in rows:
        with gr.Row():
            for name in names:
                widgets[name] = _field_widget(name, getattr(base, name))
    with gr.Accordion(t("More settings"), open=False):
        for first in range(0, len(MORE_FIELDS), 6):
            with gr.Row():
                for name in MORE_FIELDS[first : first + 6]:
                    widgets[name] = _field_widget(name, getattr(base, name))
    return widgets


def create_tab(ctx) -> None:
    selected = gr.State(None)  # the run this page follows (None: the app's current job)
    preset = gr.Dropdown(list_train_presets(), value=default_preset(), label=t("Preset"))
    widgets = _form_widgets(TrainConfig.from_preset(default_preset()))
    form = [widgets[name] for name in FORM_FIELDS]
    with gr.Row():
        start_btn = gr.Button(t("Start training"), variant="primary")
        stop_btn = gr.Button(t("Stop (after this step)"), variant="stop")
        command_btn = gr.Button(t("Show command"))
    message = gr.Markdown()
    command_box = gr.Code(language="shell", label=t("Show command"), visible=False)  # shown with its first command
    bar, status = gr.HTML(), gr.Markdown(elem_id="train-status")
    with gr.Row():
        # No height: with one, Gradio cuts the legend off below the chart.
        loss_plot = gr.LinePlot(x="step", y="value", color="series", label=t("Loss"), x_title=t("step"),
                                y_title=t("Loss"), color_title=t("series"))  # fmt: skip
        lr_plot = gr.LinePlot(x="step", y="value", color="series", label=t("Learning rate"), x_title=t("step"),
                              y_title=t("Learning rate"), color_title=t("series"))  # fmt: skip
    with gr.Accordion(t("Log"), open=False):
        log_box = gr.Textbox(lines=10, max_lines=20, interactive=False, label=t("Log"), show_label=False)
    with gr.Accordion(t("Past runs"), open=False):
        runs = i18n.table(RUN_COLUMNS + ["path"], value=runs_table(), interactive=False, wrap=True)
        with gr.Row():
            run_pick = gr.Dropdown([row[-1] for row in runs_table()], label=t("Run"), allow_custom_value=True, scale=3)
            refresh_btn = gr.Button(t("Refresh"), scale=1)
        with gr.Row():
            show_btn, resume_btn, load_btn = gr.Button(t("Show curve and config")), gr.Button(t("Resume from last checkpoint")), gr.Button(t("Load for Evaluate / Chat"))
        run_config = gr.Code(language="yaml", label=t("Config"))
    def on_start(request: gr.Request, *values):
        return start(ctx, request_lang(ctx, request), list(values)), None

    def on_stop(request: gr.Request):
        return stop(request_lang(ctx, request))

    def on_poll(request: gr.Request, chosen):
        return poll(chosen, request_lang(ctx, request))

    def on_refresh():
        table = runs_table()
        return table, gr.update(choices=[row[-1] for row in table])

    def on_show(request: gr.Request, run_dir):
        if not run_dir:
            raise gr.Error(localize(Msg("Pick a run first."), request_lang(ctx, request)))
        return run_dir, _config_text(run_dir)

    def on_resume(request: gr.Request, run_dir):
        lang = request_lang(ctx, request)
        if not run_dir:
            raise gr.Error(localize(Msg("Pick a run first."), lang))
        return start(ctx, lang, [], resume_run=run_dir), run_dir

    def on_load(request: gr.Request, run_dir):
        return load_for_chat(ctx, request_lang(ctx, request), run_dir)

    preset.change(lambda name: form_values(TrainConfig.from_preset(name)), preset, form, api_name="train_preset")
    start_btn.click(_named(on_start, FORM_FIELDS), form, [message, selected], api_name="train_start")
    stop_btn.click(on_stop, None, message, api_name="train_stop")
    def on_command(request: gr.Request, name, *values):
        return command(name, list(values), request_lang(ctx, request))

    command_btn.click(_named(on_command, ["preset", *FORM_FIELDS]), [preset, *form], command_box,
                      api_name="train_command")  # fmt: skip
    gr.Timer(2.0).tick(on_poll, selected, [bar, status, loss_plot, lr_plot, log_box], api_name="train_poll",
                       show_progress="hidden")  # fmt: skip
    refresh_btn.click(on_refresh, None, [runs, run_pick], api_name="train_runs")
    show_btn.click(on_show, run_pick, [selected, run_config], api_name="train_show_run")
    resume_btn.click(on_resume, run_pick, [message, selected], api_name="train_resume")
    load_btn.click(on_load, run_pick, message, api_name="train_load_run")
    return preselect_dataset, widgets["dataset"]


def preselect_dataset(current: str | None):
    """On arrival: the newest labeled or imported dataset replaces the bundled sample as the choice."""
    choices = [str(p) for p in list_datasets(include_variants=True)]
    latest = latest_dataset()
    is_default = not current or current == "data/sample" or current == str(paths.SAMPLE_DATASET)
    return gr.update(choices=choices, value=str(latest) if latest and is_default else current)


def _config_text(run_dir: str) -> str:
    from pathlib import Path

    from lab.training.runs import CONFIG_FILE

    return (Path(run_dir) / CONFIG_FILE).read_text(encoding="utf-8")
