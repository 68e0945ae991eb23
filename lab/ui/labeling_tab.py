"""Labeling tab: run a prompt over a whole image folder, watch it, review and export the result.

The run happens in a background thread (:func:`lab.labeling.batch.start_labeling`);
this page keeps its handle in per-session state and polls its progress with a timer.
Everything a run produces is on disk in the dataset folder, so a reloaded page still
shows the counts and the failures, and "Start / resume" carries on where it stopped.
"""

from __future__ import annotations

import shutil
import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from lab import paths
from lab.dataset import named_dataset
from lab.errors import localize
from lab.formats import FORMATS, export_for_download
from lab.images import IMAGE_SUFFIXES
from lab.jobs import JobState
from lab.labeling.batch import start_labeling
from lab.labeling.client import load_providers
from lab.labeling.costs import FREE, price_for
from lab.labeling.estimate import estimate_folder
from lab.labeling.item import PromptSpec
from lab.labeling.review import list_failures, list_items, save_review
from lab.labeling.store import DATA_FILE, job_settings, load_job, read_rows
from lab.presets import LANGS, list_prompt_presets, load_prompt_preset
from lab.text import Msg
from lab.ui import i18n
from lab.ui.i18n import t
from lab.ui.prompt_tab import LABELER_INPUTS, LOCAL, labeler_config, labeler_form, make_labeler
from lab.uploads import receive

ITEM_HEADERS = ["source", "status", "answer / reason", "tokens", "cost $", "seconds"]
FAILURE_HEADERS = ["source", "status", "reason"]
REVIEW_HEADERS = ["id", "source", "answer", "reject"]
SHOWN_FAILURES = 200


def dataset_dir(text: str) -> Path:
    """A plain name means ``data/<name>`` in the workspace; anything else is a path."""
    return named_dataset(text)


def _prompt(preset: str, lang: str) -> PromptSpec:
    return PromptSpec.from_preset(load_prompt_preset(preset), lang if lang in LANGS else "en")


def estimate(folder, out, preset, prompt_lang, limit, *, lang: str = "en", **labeler):
    """The cost estimate before starting, as one line (needs no API key); ``labeler``: the form's values by name."""
    config = labeler_config(labeler)
    model_name = config.model or (load_providers().get(config.provider, {}).get("models") or [""])[0]
    price = FREE if config.provider == LOCAL else price_for(model_name)
    found = estimate_folder(
        paths.resolve(folder),
        dataset_dir(out),
        _prompt(preset, prompt_lang),
        model_name,
        max_pixels=config.max_pixels,
        price=price,
        limit=int(limit or 0) or None,
    )
    return localize(found.summary(), lang)


def start(ctx, run, folder, out, preset, prompt_lang, limit, *, lang: str = "en", retry: bool = False, **labeler):
    """Start (or resume, or retry the failures of) a run in the background; ``labeler``: the form's values by name."""
    if run is not None and run.active:
        return run, localize(Msg("A run is still going in this page; stop it first."), lang), gr.Timer(active=True)
    out_dir = dataset_dir(out)
    prompt = _prompt(preset, prompt_lang)
    chosen = make_labeler(ctx, labeler_config(labeler))
    settings = chosen.config.public_dict() if hasattr(chosen, "config") else {"model": chosen.name, "local": True}
    job = job_settings(prompt, settings, preset=preset, lang=prompt_lang, limit=int(limit or 0) or None)
    run = start_labeling(
        paths.resolve(folder), out_dir, prompt, chosen, limit=int(limit or 0) or None, retry_failed=retry, job=job
    )
    return run, localize(Msg("Started: labeling into {out}.", out=out_dir), lang), gr.Timer(active=True)


def _refused(sentence: str):
    """A run that did not start: the sentence in the status box; the page's run (if any) stays."""
    return gr.update(), sentence, gr.Timer(active=False)


def stop(run, lang: str = "en"):
    """Ask the page's run to stop; what is finished stays."""
    if run is None or not run.active:
        return localize(Msg("No run started in this page."), lang)
    run.stop()
    return localize(Msg("Stopping; finished items are kept."), lang)


def _eta(seconds) -> str:
    if seconds is None:
        return "?"
    return time.strftime("%H:%M:%S", time.gmtime(seconds)) if seconds >= 60 else f"{seconds:.0f} s"


def progress_markdown(snap: dict, lang: str) -> str:
    """A text progress bar and the counts, rate and ETA of a progress snapshot."""
    done = snap["ok"] + snap["failed"] + snap["skipped"]
    target = done + snap["remaining"]  # less than the total when a limit was set
    share = done / target if target else (1.0 if snap["state"] == "finished" else 0.0)
    bar = "█" * round(share * 30) + "░" * (30 - round(share * 30))
    line = localize(
        Msg(
            "{state}: {ok} labeled · {failed} failed · {skipped} skipped · of {total} · ${cost:.4f} · "
            "{rate:.1f} images/s · ETA {eta}",
            state=JobState(snap["state"]).label,
            ok=snap["ok"],
            failed=snap["failed"],
            skipped=snap["skipped"],
            total=snap["total"],
            cost=snap["cost_usd"],
            rate=snap["rate"],
            eta=_eta(snap["eta_s"]),
        ),
        lang,
    )
    text = f"`{bar}` {share:.0%}  \n{line}"
    return text + (f"  \n**{localize(snap['message'], lang)}**" if snap["message"] else "")


def _item_row(item: dict, lang: str) -> list:
    text = item["answer"] if item["status"] == "ok" else localize(item["reason"], lang)
    source = item["extra"].get("source") or Path(item["source"]).name
    return [
        source,
        item["status"],
        text,
        f"{item['prompt_tokens']}+{item['completion_tokens']}",
        round(item["cost_usd"], 6),
        round(item["seconds"], 2),
    ]


def _failure_rows(out_dir: Path, lang: str) -> list[list]:
    return [[f["source"], f["status"], localize(f["reason"], lang)] for f in list_failures(out_dir)[:SHOWN_FAILURES]]


def refresh(run, out, lang: str = "en"):
    """Progress line, thumbnails, latest items, failures, the timer (stopped once the run is over) and the
    status box (how the run ended, in place of "Started", once it is over)."""
    if run is None:
        out_dir = dataset_dir(out)
        ok = sum(1 for _ in read_rows(out_dir / DATA_FILE))
        failures = _failure_rows(out_dir, lang)
        if not out_dir.is_dir():
            return (
                localize(Msg("No run started in this page."), lang),
                [],
                [],
                failures,
                gr.Timer(active=False),
                gr.update(),
            )
        message = Msg("{out}: {ok} labeled, {failed} failed so far.", out=out_dir, ok=ok, failed=len(failures))
        return localize(message, lang), [], [], failures, gr.Timer(active=False), gr.update()
    snap = run.snapshot()
    recent = snap["recent"][::-1]
    gallery = [
        (str(run.out_dir / item["extra"]["image"]), item["answer"][:200])
        for item in recent
        if item["status"] == "ok" and item["extra"].get("image")
    ][:24]
    ended = gr.update() if run.active else localize(_ending(run), lang)
    return (
        progress_markdown(snap, lang),
        gallery,
        [_item_row(item, lang) for item in recent],
        _failure_rows(run.out_dir, lang),
        gr.Timer(active=run.active),
        ended,
    )


def _ending(run) -> Msg:
    """How a run ended, for the status box: its counts, and its reason when it failed or got nothing done."""
    if run.state is JobState.FAILED or run.message:
        return Msg("{line}; {message}", line=run.line(), message=run.message)
    if run.failed and not run.ok:
        return Msg("{line}; nothing was labeled: every image failed, the reasons are below.", line=run.line())
    return run.line()


def upload(files, lang: str = "en"):
    """Put uploaded images (or the images of uploaded zips) into a new folder under the workspace."""
    if not files:
        return gr.update(), localize(Msg("Choose images or a .zip to upload first."), lang)
    folder = receive(files, IMAGE_SUFFIXES).folder
    count = sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not count:
        shutil.rmtree(folder, ignore_errors=True)
        return gr.update(), localize(Msg("No images were found in the upload."), lang)
    return str(folder), localize(Msg("{n} image(s) ready in {folder}.", n=count, folder=folder), lang)


def review_load(out, lang: str = "en"):
    """Rows of the review table: id, source, answer, reject (unticked)."""
    return [[item["id"], item["source"], item["answer"], False] for item in list_items(dataset_dir(out))]


def review_save(out, table, lang: str = "en"):
    """Apply the edited answers and the ticked rejections of the review table."""
    out_dir = dataset_dir(out)
    current = {item["id"]: item["answer"] for item in list_items(out_dir)}
    rows = table.get("data", []) if isinstance(table, dict) else (table or [])
    edits = {str(r[0]): str(r[2]) for r in rows if str(r[0]) in current and str(r[2]) != current[str(r[0])]}
    rejects = [str(r[0]) for r in rows if _ticked(r[3])]
    job = load_job(out_dir) or {}
    prompt = job.get("prompt") or {}
    saved = save_review(
        out_dir,
        edits,
        rejects,
        want_json=bool(prompt.get("want_json")),
        expected_keys=prompt.get("expected_keys") or (),
    )
    return localize(saved.summary(), lang), review_load(out, lang)


def _ticked(value) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "x", "✓")


def export(out, fmt, lang: str = "en"):
    """Export the labeled dataset into the workspace and offer it as a zip."""
    exported, archive = export_for_download(dataset_dir(out), fmt)
    return localize(exported.summary(), lang), str(archive)


def _job_widgets() -> SimpleNamespace:
    """What to label, into which dataset, with which prompt."""
    sample = paths.SAMPLE_DATASET / "images"
    presets = list_prompt_presets()
    with gr.Row():
        folder = gr.Textbox(str(sample) if sample.is_dir() else "", label=t("Image folder on the server"), scale=3)
        files = gr.File(file_count="multiple", type="filepath", label=t("Or upload images or a .zip of them"), scale=2)
        out = gr.Textbox("labeled", label=t("Dataset to write: a name under data/, or a folder"), scale=2)
    with gr.Row():
        preset = gr.Dropdown(
            presets, value="sample_caption" if "sample_caption" in presets else None, label=t("Prompt preset"), scale=3
        )
        lang = gr.Radio(list(LANGS), value="en", label=t("Prompt language"), scale=1)
        limit = gr.Number(0, precision=0, minimum=0, label=t("Label at most this many images now (0: all)"), scale=1)
    # A Chinese page asks in Chinese (once, as it loads: the person's choice stays when the page switches).
    i18n.at_page_load(
        lambda lang: lang if lang in LANGS else "en", [], lang, on_switch=False, api_name="label_page_lang"
    )
    return SimpleNamespace(folder=folder, files=files, out=out, preset=preset, lang=lang, limit=limit)


def _run_widgets() -> SimpleNamespace:
    """Buttons, the progress line, the live thumbnails and tables."""
    with gr.Row():
        estimate_btn = gr.Button(t("Estimate cost"))
        start_btn = gr.Button(t("Start / resume"), variant="primary")
        stop_btn = gr.Button(t("Stop"), variant="stop")
        retry_btn = gr.Button(t("Retry failed"))
    return SimpleNamespace(
        estimate=estimate_btn,
        start=start_btn,
        stop=stop_btn,
        retry=retry_btn,
        status=gr.Textbox(label=t("Status")),
        progress=gr.Markdown(label=t("Progress")),
        timer=gr.Timer(1.0, active=False),
        gallery=gr.Gallery(label=t("Latest labeled images"), columns=8, height=220),
        items=i18n.table(ITEM_HEADERS, label=t("Latest items"), wrap=True, interactive=False, max_height=320),
        failures=i18n.table(
            FAILURE_HEADERS, label=t("Failures and their reasons"), wrap=True, interactive=False, max_height=240
        ),
    )


def _review_widgets() -> SimpleNamespace:
    with gr.Accordion(t("Review and export"), open=False):
        load = gr.Button(t("Load answers for review"))
        table = i18n.table(
            REVIEW_HEADERS,
            datatype=["str", "str", "str", "bool"],
            type="array",
            interactive=True,
            wrap=True,
            label=t("Edit answers; tick reject to drop an item; then save"),
            static_columns=[0, 1],
        )
        save = gr.Button(t("Save review"))
        with gr.Row():
            fmt = gr.Dropdown(list(FORMATS), value="llamafactory", label=t("Export format"))
            export_btn = gr.Button(t("Export"))
            download = gr.File(label=t("Download"))
    return SimpleNamespace(load=load, table=table, save=save, fmt=fmt, export=export_btn, download=download)


def create_tab(ctx) -> None:
    run = gr.State(None)  # this page's LabelRun: per browser session, never shared
    job = _job_widgets()
    form = labeler_form("label", ctx)
    ui = _run_widgets()
    review = _review_widgets()
    inputs = [run, job.folder, job.out, job.preset, job.lang, job.limit]
    labeler = form.named(*LABELER_INPUTS)

    # A sentence the core refuses with shows in the status box (or as a toast where there is none).
    started = i18n.handler(ctx, partial(start, ctx), on_error=_refused)
    retried = i18n.handler(ctx, partial(start, ctx, retry=True), on_error=_refused)
    ticked = i18n.handler(
        ctx, refresh, on_error=lambda sentence: (sentence, [], [], [], gr.Timer(active=False), gr.update())
    )
    job.files.upload(
        i18n.handler(ctx, upload, on_error=lambda sentence: (gr.update(), sentence)),
        job.files,
        [job.folder, ui.status],
        api_name="label_upload",
    )
    job.preset.focus(lambda: gr.update(choices=list_prompt_presets()), outputs=job.preset, api_name="label_presets")
    ui.estimate.click(
        i18n.handler(ctx, estimate, on_error=str),
        inputs[1:],
        ui.status,
        api_name="label_estimate",
        inputs_kwargs=labeler,
    )
    ui.start.click(started, inputs, [run, ui.status, ui.timer], api_name="label_start", inputs_kwargs=labeler)
    ui.retry.click(retried, inputs, [run, ui.status, ui.timer], api_name="label_retry", inputs_kwargs=labeler)
    ui.stop.click(i18n.handler(ctx, stop), run, ui.status, api_name="label_stop")
    ui.timer.tick(
        ticked,
        [run, job.out],
        [ui.progress, ui.gallery, ui.items, ui.failures, ui.timer, ui.status],
        api_name="label_progress",
        show_progress="hidden",
    )
    review.load.click(i18n.handler(ctx, review_load), job.out, review.table, api_name="label_review_load")
    review.save.click(
        i18n.handler(ctx, review_save, on_error=lambda sentence: (sentence, gr.update())),
        [job.out, review.table],
        [ui.status, review.table],
        api_name="label_review_save",
    )
    review.export.click(
        i18n.handler(ctx, export, on_error=lambda sentence: (sentence, None)),
        [job.out, review.fmt],
        [ui.status, review.download],
        api_name="label_export",
    )
