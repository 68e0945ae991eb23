"""Export tab: merge a run's LoRA adapter into its base, save a complete model folder, serve it.

The merge loads its own copy of the base model (unquantized, on the CPU by default), so
it never touches the model the other tabs share.
"""

from __future__ import annotations

import gradio as gr

from lab import paths
from lab.errors import LabError, localize
from lab.export import export_run, openai_snippet, vllm_command
from lab.training.runs import list_runs
from lab.ui import i18n
from lab.ui.i18n import request_lang, t, with_lang

STRINGS = {
    "export.run": ("Training run", "训练任务"),
    "export.base": ("Base model (empty: the one the run was trained on)", "基座模型（留空：训练时所用模型）"),
    "export.out": ("Output folder (empty: models/<run>-merged)", "输出文件夹（留空：models/<任务名>-merged）"),
    "export.dtype": ("Weights dtype", "权重精度"),
    "export.device": ("Merge on", "合并设备"),
    "export.overwrite": ("Replace the output folder if it exists", "输出文件夹已存在时覆盖"),
    "export.hub": ("Push to the Hugging Face Hub as user/name (optional)", "上传到 Hugging Face Hub，填写 用户/名称（可选）"),
    "export.token": ("Hub token (empty: the saved login or HF_TOKEN)", "Hub 令牌（留空：已保存的登录或 HF_TOKEN）"),
    "export.public": ("Public repo", "公开仓库"),
    "export.max_len": ("vLLM --max-model-len", "vLLM --max-model-len"),
    "export.images": ("Images per prompt", "每条提示的图片数"),
    "export.gpu_util": ("GPU memory utilization", "GPU 显存占用比例"),
    "export.go": ("Merge and export", "合并并导出"),
    "export.command": ("Show the serving command", "显示部署命令"),
    "export.status": ("Status", "状态"),
    "export.vllm": ("Serve with vLLM", "用 vLLM 部署"),
    "export.client": ("Call it with the openai client", "用 openai 客户端调用"),
    "export.done": ("Exported {run} to {out} in {seconds:.1f} s: {files}", "已将 {run} 导出到 {out}，用时 {seconds:.1f} 秒：{files}"),
    "export.pushed": ("Uploaded to {url}", "已上传到 {url}"),
    "export.pick": ("Pick a training run to export.", "请选择要导出的训练任务。"),
}
i18n.register(STRINGS)


def run_choices() -> list[str]:
    return [p.name for p in list_runs()]


def default_out(run: str) -> str:
    return str(paths.models_dir() / f"{(run or 'model').strip().rstrip('/').split('/')[-1]}-merged")


def serving_texts(out: str, run: str, max_len, images, gpu_util, lang: str = "en") -> tuple[str, str]:
    """The vllm command and the openai snippet for the folder ``out`` (or the default for ``run``)."""
    folder = (out or "").strip() or default_out(run)
    try:
        command = vllm_command(folder, max_model_len=int(max_len), images_per_prompt=int(images),
                               gpu_memory_utilization=float(gpu_util))  # fmt: skip
    except LabError as err:
        raise gr.Error(localize(err, lang)) from None
    return command, openai_snippet(folder.rstrip("/").split("/")[-1])


def do_export(run, base, out, dtype, device, overwrite, hub_id, token, public, max_len, images, gpu_util, lang="en"):
    """Merge and save; returns (status, vllm command, snippet)."""
    if not (run or "").strip():
        raise gr.Error(i18n.text("export.pick", lang))
    out = (out or "").strip() or default_out(run)
    try:
        result = export_run(run.strip(), out, base=(base or "").strip() or None, dtype=dtype, device=device,
                            overwrite=bool(overwrite), push_to_hub=(hub_id or "").strip() or None,
                            token=(token or "").strip() or None, private=not public)  # fmt: skip
    except LabError as err:
        raise gr.Error(localize(err, lang)) from None
    status = i18n.text("export.done", lang, run=result.run, out=result.out_dir, seconds=result.seconds,
                       files=", ".join(result.files))  # fmt: skip
    if result.hub_url:
        status += "  \n" + i18n.text("export.pushed", lang, url=result.hub_url)
    return (status, *serving_texts(str(result.out_dir), run, max_len, images, gpu_util, lang))


def create_tab(ctx) -> None:
    with gr.Row():
        run = gr.Dropdown(run_choices(), label=t("export.run"), allow_custom_value=True, scale=2)
        base = gr.Textbox(label=t("export.base"), scale=2)
    with gr.Row():
        out = gr.Textbox(label=t("export.out"), scale=3)
        dtype = gr.Dropdown(["auto", "bfloat16", "float16", "float32"], value="auto", label=t("export.dtype"), scale=1)
        device = gr.Dropdown(["cpu", "cuda"], value="cpu", label=t("export.device"), scale=1)
        overwrite = gr.Checkbox(value=False, label=t("export.overwrite"), scale=1)
    with gr.Row():
        hub_id = gr.Textbox(label=t("export.hub"), scale=2)
        token = gr.Textbox(type="password", label=t("export.token"), scale=2)
        public = gr.Checkbox(value=False, label=t("export.public"), scale=1)
    with gr.Row():
        max_len = gr.Number(value=8192, precision=0, minimum=256, label=t("export.max_len"))
        images = gr.Number(value=5, precision=0, minimum=0, label=t("export.images"))
        gpu_util = gr.Slider(0.1, 1.0, value=0.9, step=0.05, label=t("export.gpu_util"))
    with gr.Row():
        go = gr.Button(t("export.go"), variant="primary")
        show = gr.Button(t("export.command"))
    status = gr.Markdown()
    command = gr.Code(language="shell", label=t("export.vllm"))
    snippet = gr.Code(language="python", label=t("export.client"))

    def on_export(request: gr.Request, run, base, out, dtype, device, overwrite, hub_id, token, public, max_len, images,
                  gpu_util):  # fmt: skip
        return do_export(run, base, out, dtype, device, overwrite, hub_id, token, public, max_len, images, gpu_util,
                         lang=request_lang(ctx, request))  # fmt: skip

    form = [run, base, out, dtype, device, overwrite, hub_id, token, public, max_len, images, gpu_util]
    go.click(on_export, form, [status, command, snippet], api_name="export")
    show.click(with_lang(ctx, serving_texts), [out, run, max_len, images, gpu_util], [command, snippet], api_name="export_command")
    run.focus(lambda: gr.update(choices=run_choices()), outputs=run, api_name="export_runs")
    return preselect_run, run


def preselect_run(current: str | None):
    """On arrival: the newest run is chosen unless the person already picked one."""
    choices = run_choices()
    return gr.update(choices=choices, value=current or (choices[0] if choices else None))
