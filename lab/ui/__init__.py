"""The Gradio app: a header and one tab per step of the work.

Each tab lives in its own module with ``create_tab(ctx)``; it reads its form, calls one
core function and shows the result. ``create_tab`` may return ``(update, component)``:
``update(current_value)`` runs when the person opens the tab, so it can preselect what
the earlier tabs made (``(update, inputs, outputs)`` when it shows more). Every event has an ``api_name``: that is the
app's test surface and its API for ``gradio_client``.
"""

from __future__ import annotations

import os
from importlib import import_module

import gradio as gr
from starlette.middleware import Middleware

from lab import paths
from lab.errors import LabError, cli_lang, localize
from lab.text import Msg
from lab.ui import i18n
from lab.ui.context import AppSettings, UIContext
from lab.ui.guide import create_guide
from lab.ui.header import create_header
from lab.uploads import UploadLimits

# (module, label) in the order of the work.
TABS = [
    ("lab.ui.prompt_tab", Msg("Prompt design")),
    ("lab.ui.labeling_tab", Msg("Labeling")),
    ("lab.ui.dataset_tab", Msg("Dataset")),
    ("lab.ui.train_tab", Msg("Train")),
    ("lab.ui.eval_tab", Msg("Evaluate")),
    ("lab.ui.chat_tab", Msg("Chat")),
    ("lab.ui.export_tab", Msg("Export")),
]


def build_app(ctx: UIContext) -> gr.Blocks:
    with gr.Blocks(title="VLM Lab") as app:
        create_header(ctx)
        create_guide(ctx)
        with gr.Tabs():
            for module, label in TABS:
                with gr.Tab(i18n.t(label)) as tab:  # dynamic template: the Msgs of TABS
                    handoff = import_module(module).create_tab(ctx)
                i18n.relabel_on_switch(tab, label)
                if handoff is not None:
                    # What the earlier tabs made (a labeled dataset, a finished run) is preselected on arrival:
                    # (update, component), or (update, inputs, outputs) when a note says why.
                    update, inputs, outputs = handoff if len(handoff) == 3 else (*handoff, handoff[1])
                    tab.select(update, inputs, outputs, api_name=f"{module.rsplit('.', 1)[-1]}_select")
        i18n.localize_page(ctx, app)
    return app


def launch(settings: AppSettings, block: bool = True) -> tuple[gr.Blocks, UIContext]:
    """Build the app, start loading the model in the background, and serve it."""
    if settings.workspace:
        os.environ["LAB_HOME"] = settings.workspace
    ctx = UIContext(settings=settings)
    app = build_app(ctx)
    app.queue(default_concurrency_limit=4)
    app.launch(
        server_name=settings.host,
        server_port=settings.port,
        share=settings.share,
        i18n=i18n.build_i18n(),
        app_kwargs={"middleware": [Middleware(i18n.LanguageScript, forced=settings.lang)]},
        quiet=True,  # its own lines speak of launch(share=True); ours below name --share
        show_error=True,
        max_file_size=UploadLimits.from_env().max_file_bytes,  # a bigger upload is stopped while it arrives
        # Gradio serves files from the working folder and the temp folder only; a workspace elsewhere
        # (a Space's persistent /data) needs its datasets and downloads named, or no image shows.
        allowed_paths=[str(paths.datasets_dir()), str(paths.workspace() / "exports")],
        prevent_thread_lock=True,
    )
    lang = cli_lang()
    print(localize(Msg("VLM Lab is running on {url}", url=app.local_url), lang), flush=True)
    if not settings.share and not os.environ.get("SPACE_ID"):
        print(localize(Msg("Start it with --share for a temporary public link."), lang), flush=True)
    # The model loads once the page is served: importing torch and reading weights would
    # otherwise hold up the first page by seconds.
    if settings.model:
        try:
            options = {"trust_remote_code": True} if settings.trust_remote_code else {}
            ctx.handle.load_in_background(settings.model, **options)
        except LabError as err:  # a name refused at once: the header says why, the app still starts
            ctx.handle.record_error(err)
    if block:
        app.block_thread()
    return app, ctx
