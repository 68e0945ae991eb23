"""Export tab: merge a run's LoRA adapter into its base, save a complete model folder, serve it.

The merge loads its own copy of the base model (unquantized, on the CPU by default), so
it never touches the model the other tabs share.
"""

from __future__ import annotations

import gradio as gr

from lab import paths
from lab.errors import LabError, localize
from lab.export import ExportSettings, export_run, openai_snippet, vllm_command
from lab.text import Msg
from lab.training.runs import list_runs
from lab.ui import i18n
from lab.ui.forms import Form, read_values
from lab.ui.i18n import t


def run_choices() -> list[str]:
    return [p.name for p in list_runs()]


def default_out(run: str) -> str:
    return str(paths.models_dir() / f"{(run or 'model').strip().rstrip('/').split('/')[-1]}-merged")


def serving_texts(out: str, run: str, settings: ExportSettings) -> tuple[str, str]:
    """The vllm command and the openai snippet for the folder ``out`` (or the default for ``run``)."""
    folder = (out or "").strip() or default_out(run)
    return vllm_command(folder, settings), openai_snippet(folder.rstrip("/").split("/")[-1])


def show_command(values: dict) -> tuple[str, str]:
    """Handler of "Show the serving command"; ``values`` by name (out, run, ExportSettings' fields)."""
    return serving_texts(values["out"], values["run"], read_values(ExportSettings, values))


def do_export(values: dict, lang="en"):
    """Merge and save; returns (status, vllm command, snippet).

    ``values`` by name (run, out, ExportSettings' fields).
    """
    run = (values.get("run") or "").strip()
    if not run:
        raise LabError("Pick a training run to export.")
    out = (values.get("out") or "").strip() or default_out(run)
    settings = read_values(ExportSettings, values)
    result = export_run(run, out, settings)
    status = localize(
        Msg(
            "Exported {run} to {out} in {seconds:.1f} s: {files}",
            run=result.run,
            out=result.out_dir,
            seconds=result.seconds,
            files=", ".join(result.files),
        ),
        lang,
    )
    if result.hub_url:
        status += "  \n" + localize(Msg("Uploaded to {url}", url=result.hub_url), lang)
    return (status, *serving_texts(str(result.out_dir), run, settings))


def create_tab(ctx) -> None:
    form = Form(ExportSettings)
    with gr.Row():
        run = gr.Dropdown(run_choices(), label=t("Training run"), allow_custom_value=True, scale=2)
        form.add("base", scale=2)
    with gr.Row():
        out = gr.Textbox(label=t("Output folder (empty: models/<run>-merged)"), scale=3)
        form.add("dtype", scale=1)
        form.add("device", scale=1)
        form.add("overwrite", scale=1)
    with gr.Row():
        form.add("push_to_hub", scale=2)
        form.add("token", scale=2)
        form.add("public", scale=1)
    form.row("max_model_len", "images_per_prompt", "gpu_memory_utilization")
    with gr.Row():
        go = gr.Button(t("Merge and export"), variant="primary")
        show = gr.Button(t("Show the serving command"))
    status = gr.Markdown()
    command = gr.Code(language="shell", label=t("Serve with vLLM"))
    snippet = gr.Code(language="python", label=t("Call it with the openai client"))

    # A LabError (no run picked, a bad folder, a refused upload) is one sentence in a toast (i18n.handler).
    def on_export(*, lang, **values):
        return do_export(values, lang=lang)

    def on_show(*, lang, **values):
        return show_command(values)

    # The API's parameters, in this order.
    serving = form.named("max_model_len", "images_per_prompt", "gpu_memory_utilization")
    inputs = {
        "run": run,
        **form.named("base"),
        "out": out,
        **form.named("dtype", "device", "overwrite", "push_to_hub", "token", "public"),
        **serving,
    }
    serving = {"out": out, "run": run, **serving}
    go.click(i18n.handler(ctx, on_export), None, [status, command, snippet], api_name="export", inputs_kwargs=inputs)
    show.click(i18n.handler(ctx, on_show), None, [command, snippet], api_name="export_command", inputs_kwargs=serving)
    run.focus(lambda: gr.update(choices=run_choices()), outputs=run, api_name="export_runs")
    return preselect_run, run


def preselect_run(current: str | None):
    """On arrival: the newest run is chosen unless the person already picked one."""
    choices = run_choices()
    return gr.update(choices=choices, value=current or (choices[0] if choices else None))
