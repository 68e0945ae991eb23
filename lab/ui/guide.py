"""The classroom demo: what to click, in order, to walk the whole loop offline on a CPU."""

from __future__ import annotations

import gradio as gr

from lab.train_config import DEMO_MODEL
from lab.ui.context import UIContext
from lab.ui.i18n import t


def create_guide(ctx: UIContext) -> None:
    title = t("Classroom demo: the whole loop offline, on a CPU, in a few minutes")
    with gr.Accordion(title, open=ctx.settings.model == DEMO_MODEL, elem_id="classroom-guide"):
        gr.Markdown(
            t(
                "The header says a **tiny random demo model** is loaded: it knows nothing yet, and that is the "
                "point.\n"
                "\n"
                "1. **Prompt design**: keep the preset `sample_caption` and the sample images, choose the "
                "labeler *Local model loaded in the app* (no API key needed) and press **Run preview**: the "
                "answers come in one by one, and the untrained model answers nonsense that runs on until the "
                "answer-length limit cuts it off, so none of it is usable yet.\n"
                "2. **Dataset**: look at `data/sample`: 60 generated UI components and charts, each with a "
                "reference caption.\n"
                "3. **Train**: pick the preset `cpu_demo` and press **Start training**. Watch the loss fall on "
                "the plot (about two minutes).\n"
                "4. **Evaluate**: choose `data/sample`, tick *Compare with the base model* and press "
                "**Evaluate**: the fine-tuned model scores far above the base model, sample by sample.\n"
                "5. **Chat**: drop in a sample image and ask *Describe this UI component in one sentence.* "
                "Untick *Answer with the fine-tuned adapter* to hear the base model again.\n"
                "6. **Export**: merge the run into a complete model folder and copy the `vllm serve` command.\n"
                "\n"
                "With an API key (OpenAI, DashScope, a local vLLM or Ollama) the **Labeling** tab labels your "
                "own folder of images the same way, ready for step 3."
            )
        )
