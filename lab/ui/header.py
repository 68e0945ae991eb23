"""The top of every page: what model is loaded (adapter, quantization, device, memory, state),
and the controls of the one shared model: load a model or a training run, pick the active
adapter, unload. Loading runs in the background; the status line follows it."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from lab.errors import localize
from lab.handle import adapter_names
from lab.model_sources import offered_models
from lab.text import LANGS, Msg
from lab.training.runs import list_runs
from lab.ui import i18n
from lab.ui.context import UIContext
from lab.ui.i18n import t


def status_markdown(ctx: UIContext, lang: str = "en", viewer: str | None = None) -> str:
    info = ctx.handle.describe(viewer)
    if info["state"] == "loading" and info.get("download"):
        done, total = info["download"]
        return localize(
            Msg(
                "Downloading the model… {percent}% of {size} GB",
                percent=100 * done // max(total, 1),
                size=f"{total / 1e9:.1f}",
            ),
            lang,
        )
    if info["state"] == "loading":
        return localize(Msg("Loading the model…"), lang)
    if "name" not in info:
        if info["error"]:
            return localize(Msg("The model could not be loaded: {error}", error=info["error"]), lang)
        return localize(Msg("No model loaded."), lang)
    parts = [f"**{info['name']}**"]
    if info.get("tuned_from"):  # a full fine-tune's weights replaced the base model's in memory
        parts = [
            localize(
                Msg(
                    "run {run}, fully fine-tuned from {base}",
                    run=f"**{Path(info['name']).name}**",
                    base=info["tuned_from"],
                ),
                lang,
            )
        ]
    if info.get("adapter"):
        adapter = localize(Msg("LoRA adapter {name}", name=f"**{info['adapter']}**"), lang)
        parts.append(adapter if info.get("adapter_enabled") else f"{adapter} ({localize(Msg('off by default'), lang)})")
    parts += [info["family"], info["device"], info["dtype"]]
    if info["quantization"] != "none":
        parts.append(info["quantization"])
    if info["memory_gib"] is not None:
        parts.append(f"{info['memory_gib']} GiB")
    parts.append(f"{localize(Msg('state'), lang)}: {localize(info['state'].label, lang)}")
    line = " · ".join(parts)
    if info["is_tiny"] and not (info.get("adapter") or ctx.handle.run_dir):  # once trained it is no longer noise
        line += f"  \n⚠️ {localize(Msg('tiny random demo model: its answers are noise until you train it'), lang)}"
    return line


NO_ADAPTER = "(none)"
LANG_NAMES = {"en": "English", "zh": "中文"}  # each language in its own words, on the switch
SUBTITLE = Msg(
    "From a folder of images to a fine-tuned vision-language model: design prompts, label, train, evaluate, chat."
)


def _viewer(request) -> str | None:
    return getattr(request, "session_hash", None)


def model_choices(ctx: UIContext) -> list[tuple[str, str]]:
    """The models offered in the picker (:func:`lab.model_sources.offered_models`), the started one first."""
    return offered_models(ctx.settings.model)


def adapter_choices(ctx: UIContext) -> list[str]:
    loaded = ctx.handle.loaded
    return [NO_ADAPTER] + (adapter_names(loaded) if loaded is not None else [])


def _controls(ctx: UIContext, status: gr.Markdown) -> None:
    with gr.Accordion(t("Model: load, pick the adapter, unload"), open=False):
        with gr.Row():
            # On a shared deployment only the owner's allow-list can be loaded; elsewhere any name or folder.
            model = gr.Dropdown(
                model_choices(ctx),
                value=ctx.settings.model or "",
                allow_custom_value=True,
                label=t("Model: Hub id, local folder or demo"),
                scale=3,
            )
            quant = gr.Dropdown(["none", "4bit", "8bit"], value="none", label=t("Quantization"), scale=1)
            trust = gr.Checkbox(False, label=t("Trust remote code"), scale=1)
            load = gr.Button(t("Load model"), scale=1)
        with gr.Row():
            run = gr.Dropdown(
                [p.name for p in list_runs()],
                allow_custom_value=True,
                label=t("Training run (its base model + adapter)"),
                scale=4,
            )
            load_run = gr.Button(t("Load run"), scale=1)
        with gr.Row():
            adapter = gr.Dropdown(
                [NO_ADAPTER], value=NO_ADAPTER, allow_custom_value=True, label=t("Active adapter"), scale=3
            )
            use = gr.Button(t("Use"), scale=1)
            unload = gr.Button(t("Unload"), variant="stop", scale=1)

    # A busy model or a bad name is one sentence on the page (i18n.handler); else the new status line.
    def on_load(name, quantization, trust_remote_code, *, request, lang):
        options = {
            "quantization": None if quantization == "none" else quantization,
            "trust_remote_code": bool(trust_remote_code),
        }
        ctx.handle.load_in_background((name or "").strip(), owner=_viewer(request), **options)
        return status_markdown(ctx, lang, _viewer(request))

    def on_load_run(name, *, request, lang):
        ctx.handle.load_in_background(None, run=(name or "").strip(), owner=_viewer(request))
        return status_markdown(ctx, lang, _viewer(request))

    def on_use(name, *, request, lang):
        ctx.handle.select_adapter(None if name == NO_ADAPTER else name)
        return status_markdown(ctx, lang, _viewer(request))

    def on_unload(*, request, lang):
        ctx.handle.unload()
        return status_markdown(ctx, lang, _viewer(request))

    load.click(i18n.handler(ctx, on_load), [model, quant, trust], status, api_name="model_load")
    load_run.click(i18n.handler(ctx, on_load_run), run, status, api_name="model_load_run")
    use.click(i18n.handler(ctx, on_use), adapter, status, api_name="model_use_adapter")
    unload.click(i18n.handler(ctx, on_unload), None, status, api_name="model_unload")
    run.focus(lambda: gr.update(choices=[p.name for p in list_runs()]), outputs=run, api_name="model_runs")
    adapter.focus(lambda: gr.update(choices=adapter_choices(ctx)), outputs=adapter, api_name="model_adapters")


def create_header(ctx: UIContext) -> gr.Markdown:
    with gr.Row():
        gr.Markdown("# VLM Lab")
        for lang in LANGS:
            i18n.switch_button(
                lang, LANG_NAMES.get(lang, lang), size="sm", scale=0, min_width=80, elem_id=f"lang-{lang}"
            )
    gr.Markdown(t(SUBTITLE))  # dynamic template: the Msg SUBTITLE above
    status = gr.Markdown(status_markdown(ctx), elem_id="model-status")
    _controls(ctx, status)
    timer = gr.Timer(2.0)

    def on_tick(*, request, lang):
        return status_markdown(ctx, lang, _viewer(request))

    timer.tick(i18n.handler(ctx, on_tick), outputs=status, api_name="model_status", show_progress="hidden")
    return status
