"""The line at the top of every page: what model is loaded, and its state."""

from __future__ import annotations

import gradio as gr

from lab.ui import i18n
from lab.ui.context import UIContext
from lab.ui.i18n import t

STRINGS = {
    "app.title": ("VLM Lab", "VLM Lab 视觉语言模型工坊"),
    "app.subtitle": (
        "From a folder of images to a fine-tuned vision-language model: design prompts, label, train, evaluate, chat.",
        "从一个图片文件夹到微调好的视觉语言模型：设计提示词、标注、训练、评估、对话。",
    ),
    "header.none": ("No model loaded.", "尚未加载模型。"),
    "header.loading": ("Loading the model…", "正在加载模型…"),
    "header.error": ("The model could not be loaded: {error}", "模型加载失败：{error}"),
    "header.tiny": (
        "tiny random demo model: its answers are noise until you train it",
        "微型随机演示模型：训练之前它的回答是随机的",
    ),
    "header.state": ("state", "状态"),
    "header.adapter": ("LoRA adapter {name}", "LoRA 适配器 {name}"),
    "header.adapter_off": ("off by default", "默认关闭"),
}
i18n.register(STRINGS)


def status_markdown(ctx: UIContext, lang: str = "en") -> str:
    info = ctx.handle.describe()
    if info["state"] == "loading":
        return i18n.text("header.loading", lang)
    if "name" not in info:
        if info["error"]:
            return i18n.text("header.error", lang, error=info["error"])
        return i18n.text("header.none", lang)
    parts = [f"**{info['name']}**"]
    if info.get("adapter"):
        adapter = i18n.text("header.adapter", lang, name=f"**{info['adapter']}**")
        parts.append(adapter if info.get("adapter_enabled") else f"{adapter} ({i18n.text('header.adapter_off', lang)})")
    parts += [info["family"], info["device"], info["dtype"]]
    if info["quantization"] != "none":
        parts.append(info["quantization"])
    if info["memory_gib"] is not None:
        parts.append(f"{info['memory_gib']} GiB")
    parts.append(f"{i18n.text('header.state', lang)}: {info['state']}")
    line = " · ".join(parts)
    if info["is_tiny"]:
        line += f"  \n⚠️ {i18n.text('header.tiny', lang)}"
    return line


def create_header(ctx: UIContext) -> gr.Markdown:
    with gr.Row():
        gr.Markdown(f"# {STRINGS['app.title'][0]}")
        english = gr.Button("English", size="sm", scale=0, min_width=80, elem_id="lang-en")
        chinese = gr.Button("中文", size="sm", scale=0, min_width=80, elem_id="lang-zh")
    english.click(None, js=i18n.switch_js("en"), api_name="lang_en")
    chinese.click(None, js=i18n.switch_js("zh"), api_name="lang_zh")
    gr.Markdown(t("app.subtitle"))
    status = gr.Markdown(status_markdown(ctx), elem_id="model-status")
    timer = gr.Timer(2.0)

    def on_tick(request: gr.Request):
        return status_markdown(ctx, i18n.request_lang(request, ctx.settings.lang))

    timer.tick(on_tick, outputs=status, api_name="model_status", show_progress="hidden")
    return status
