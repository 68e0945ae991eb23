"""The classroom demo: what to click, in order, to walk the whole loop offline on a CPU."""

from __future__ import annotations

import gradio as gr

from lab.ui import i18n
from lab.ui.context import UIContext
from lab.ui.i18n import t

STRINGS = {
    "guide.title": ("Classroom demo: the whole loop offline, on a CPU, in a few minutes", "课堂演示：离线、只用 CPU、几分钟走完全流程"),
    "guide.body": (
        "The header says a **tiny random demo model** is loaded: it knows nothing yet, and that is the point.\n\n"
        "1. **Prompt design**: keep the preset `sample_caption` and the sample images, choose the labeler "
        "*Local model loaded in the app* (no API key needed) and press **Run preview**: the untrained model answers nonsense.\n"
        "2. **Dataset**: look at `data/sample`: 60 generated UI components and charts, each with a reference caption.\n"
        "3. **Train**: pick the preset `cpu_demo` and press **Start training**. Watch the loss fall on the plot (about two minutes).\n"
        "4. **Evaluate**: choose `data/sample`, tick *Compare with the base model* and press **Evaluate**: "
        "the fine-tuned model scores far above the base model, sample by sample.\n"
        "5. **Chat**: drop in a sample image and ask *Describe this UI component in one sentence.* "
        "Untick *Answer with the fine-tuned adapter* to hear the base model again.\n"
        "6. **Export**: merge the run into a complete model folder and copy the `vllm serve` command.\n\n"
        "With an API key (OpenAI, DashScope, a local vLLM or Ollama) the **Labeling** tab labels your own folder of images "
        "the same way, ready for step 3.",
        "页首显示已加载的是**微型随机演示模型**：它什么都不会，这正是演示的起点。\n\n"
        "1. **提示词设计**：保留预设 `sample_caption` 和示例图片，标注模型选择“应用中已加载的本地模型”（无需 API Key），"
        "点击**运行预览**：未训练的模型答非所问。\n"
        "2. **数据集**：查看 `data/sample`：60 张生成的 UI 组件和图表，每张都有参考描述。\n"
        "3. **训练**：选择预设 `cpu_demo`，点击**开始训练**，看损失曲线下降（约两分钟）。\n"
        "4. **评估**：选择 `data/sample`，勾选“与基座模型对比”，点击**开始评估**：微调后的模型得分远高于基座模型，可逐条对比。\n"
        "5. **对话**：拖入一张示例图片，问“Describe this UI component in one sentence.”；取消勾选“使用微调适配器回答”即可听到基座模型的回答。\n"
        "6. **导出**：把训练结果合并成完整的模型文件夹，并复制 `vllm serve` 部署命令。\n\n"
        "有 API Key（OpenAI、DashScope、本地 vLLM 或 Ollama）时，**批量标注**页可以用同样的方式标注你自己的图片文件夹，直接用于第 3 步。",
    ),
}
i18n.register(STRINGS)


def create_guide(ctx: UIContext) -> None:
    with gr.Accordion(t("guide.title"), open=ctx.settings.model == "demo", elem_id="classroom-guide"):
        gr.Markdown(t("guide.body"))
