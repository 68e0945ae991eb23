"""Export tab: merge a run's LoRA adapter into its base, save a complete model folder, serve it.

The merge loads its own copy of the base model (unquantized, on the CPU by default), so
it never touches the model the other tabs share.
"""

from __future__ import annotations

import gradio as gr

from lab import paths
from lab.errors import LabError, localize
from lab.export import export_run, openai_snippet, vllm_command
from lab.text import Msg
from lab.training.runs import list_runs
from lab.ui import i18n
from lab.ui.i18n import t


def run_choices() -> list[str]:
    return [p.name for p in list_runs()]


def default_out(run: str) -> str:
    return str(paths.models_dir() / f"{(run or 'model').strip().rstrip('/').split('/')[-1]}-merged")


def serving_texts(out: str, run: str, max_len, images, gpu_util, lang: str = "en") -> tuple[str, str]:
    """The vllm command and the openai snippet for the folder ``out`` (or the default for ``run``)."""
    folder = (out or "").strip() or default_out(run)
    command = vllm_command(folder, max_model_len=int(max_len), images_per_prompt=int(images),
                           gpu_memory_utilization=float(gpu_util))  # fmt: skip
    return command, openai_snippet(folder.rstrip("/").split("/")[-1])


def do_export(run, base, out, dtype, device, overwrite, hub_id, token, public, max_len, images, gpu_util, lang="en"):
    """Merge and save; returns (status, vllm command, snippet)."""
    if not (run or "").strip():
        raise LabError("Pick a training run to export.")
    out = (out or "").strip() or default_out(run)
    result = export_run(run.strip(), out, base=(base or "").strip() or None, dtype=dtype, device=device,
                        overwrite=bool(overwrite), push_to_hub=(hub_id or "").strip() or None,
                        token=(token or "").strip() or None, private=not public)  # fmt: skip
    status = localize(Msg("Exported {run} to {out} in {seconds:.1f} s: {files}",
                          run=result.run, out=result.out_dir, seconds=result.seconds,
                          files=", ".join(result.files)), lang)  # fmt: skip
    if result.hub_url:
        status += "  \n" + localize(Msg("Uploaded to {url}", url=result.hub_url), lang)
    return (status, *serving_texts(str(result.out_dir), run, max_len, images, gpu_util, lang))


def create_tab(ctx) -> None:
    with gr.Row():
        run = gr.Dropdown(run_choices(), label=t("Training run"), allow_custom_value=True, scale=2)
        base = gr.Textbox(label=t("Base model (empty: the one the run was trained on)"), scale=2)
    with gr.Row():
        out = gr.Textbox(label=t("Output folder (empty: models/<run>-merged)"), scale=3)
        dtype = gr.Dropdown(["auto", "bfloat16", "float16", "float32"], value="auto", label=t("Weights dtype"), scale=1)
        device = gr.Dropdown(["cpu", "cuda"], value="cpu", label=t("Merge on"), scale=1)
        overwrite = gr.Checkbox(value=False, label=t("Replace the output folder if it exists"), scale=1)
    with gr.Row():
        hub_id = gr.Textbox(label=t("Push to the Hugging Face Hub as user/name (optional)"), scale=2)
        token = gr.Textbox(type="password", label=t("Hub token (empty: the saved login or HF_TOKEN)"), scale=2)
        public = gr.Checkbox(value=False, label=t("Public repo"), scale=1)
    with gr.Row():
        max_len = gr.Number(value=8192, precision=0, minimum=256, label=t("vLLM --max-model-len"))
        images = gr.Number(value=5, precision=0, minimum=0, label=t("Images per prompt"))
        gpu_util = gr.Slider(0.1, 1.0, value=0.9, step=0.05, label=t("GPU memory utilization"))
    with gr.Row():
        go = gr.Button(t("Merge and export"), variant="primary")
        show = gr.Button(t("Show the serving command"))
    status = gr.Markdown()
    command = gr.Code(language="shell", label=t("Serve with vLLM"))
    snippet = gr.Code(language="python", label=t("Call it with the openai client"))

    # A LabError (no run picked, a bad folder, a refused upload) is one sentence in a toast (i18n.handler).
    form = [run, base, out, dtype, device, overwrite, hub_id, token, public, max_len, images, gpu_util]
    go.click(i18n.handler(ctx, do_export), form, [status, command, snippet], api_name="export")
    show.click(i18n.handler(ctx, serving_texts), [out, run, max_len, images, gpu_util], [command, snippet],
               api_name="export_command")  # fmt: skip
    run.focus(lambda: gr.update(choices=run_choices()), outputs=run, api_name="export_runs")
    return preselect_run, run


def preselect_run(current: str | None):
    """On arrival: the newest run is chosen unless the person already picked one."""
    choices = run_choices()
    return gr.update(choices=choices, value=current or (choices[0] if choices else None))
