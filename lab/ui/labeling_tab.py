"""Labeling tab: run a prompt over a whole image folder, watch it, review and export the result.

The run happens in a background thread (:func:`lab.labeling.batch.start_labeling`);
this page keeps its handle in per-session state and polls its progress with a timer.
Everything a run produces is on disk in the dataset folder, so a reloaded page still
shows the counts and the failures, and "Start / resume" carries on where it stopped.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from lab import paths
from lab.errors import ConfigError, LabError, localize
from lab.formats import FORMATS, export_for_download
from lab.images import IMAGE_SUFFIXES
from lab.jobs import JobState
from lab.labeling.batch import start_labeling
from lab.labeling.estimate import estimate_folder
from lab.labeling.client import load_providers
from lab.labeling.costs import FREE, price_for
from lab.labeling.item import PromptSpec
from lab.labeling.review import list_failures, list_items, save_review
from lab.labeling.store import DATA_FILE, job_settings, load_job, read_rows
from lab.presets import LANGS, list_prompt_presets, load_prompt_preset
from lab.ui import i18n
from lab.ui.i18n import request_lang, t, with_lang
from lab.ui.prompt_tab import LABELER_INPUTS, LOCAL, labeler_config, labeler_form, make_labeler
from lab.uploads import receive

STRINGS = {
    "label.images": ("Image folder on the server", "服务器上的图片文件夹"),
    "label.upload": ("Or upload images or a .zip of them", "或上传图片或图片的 .zip"),
    "label.out": ("Dataset to write: a name under data/, or a folder", "写入的数据集：data/ 下的名称，或文件夹路径"),
    "label.preset": ("Prompt preset", "提示词预设"),
    "label.lang": ("Prompt language", "提示词语言"),
    "label.limit": ("Label at most this many images now (0: all)", "本次最多标注多少张（0：全部）"),
    "label.estimate": ("Estimate cost", "估算费用"),
    "label.start": ("Start / resume", "开始 / 继续"),
    "label.stop": ("Stop", "停止"),
    "label.retry": ("Retry failed", "重试失败项"),
    "label.progress": ("Progress", "进度"),
    "label.recent": ("Latest labeled images", "最近标注的图片"),
    "label.items": ("Latest items", "最近的条目"),
    "label.failures": ("Failures and their reasons", "失败项及原因"),
    "label.review": ("Review and export", "审阅与导出"),
    "label.review_load": ("Load answers for review", "载入回答以审阅"),
    "label.review_table": ("Edit answers; tick reject to drop an item; then save", "编辑回答；勾选“剔除”列去掉条目；然后保存"),
    "label.review_save": ("Save review", "保存审阅"),
    "label.format": ("Export format", "导出格式"),
    "label.export": ("Export", "导出"),
    "label.download": ("Download", "下载"),
    "label.status": ("Status", "状态"),
    "label.idle": ("No run started in this page.", "本页面尚未开始标注。"),
    "label.busy": ("A run is still going in this page; stop it first.", "本页面的标注仍在进行，请先停止。"),
    "label.started": ("Started: labeling into {out}.", "已开始：标注结果写入 {out}。"),
    "label.stopping": ("Stopping; finished items are kept.", "正在停止；已完成的条目会保留。"),
    "label.on_disk": ("{out}: {ok} labeled, {failed} failed so far.", "{out}：目前已标注 {ok} 张，失败 {failed} 张。"),
    "label.line": (
        "{state}: {ok} labeled · {failed} failed · {skipped} skipped · of {total} · ${cost:.4f} · {rate:.1f} images/s · ETA {eta}",
        "{state}：已标注 {ok} · 失败 {failed} · 跳过 {skipped} · 共 {total} · ${cost:.4f} · {rate:.1f} 张/秒 · 剩余 {eta}",
    ),
    "label.exported": ("Exported to {path}", "已导出到 {path}"),
    "label.uploaded": ("{n} image(s) ready in {folder}.", "{n} 张图片已放到 {folder}。"),
    "label.upload_first": ("Choose images or a .zip to upload first.", "请先选择要上传的图片或 .zip。"),
    "label.no_images": ("No images were found in the upload.", "上传的文件中没有找到图片。"),
}
i18n.register(STRINGS)

ITEM_HEADERS = ["source", "status", "answer / reason", "tokens", "cost $", "seconds"]
FAILURE_HEADERS = ["source", "status", "reason"]
REVIEW_HEADERS = ["id", "source", "answer", "reject"]
SHOWN_FAILURES = 200


def dataset_dir(text: str) -> Path:
    """A plain name means ``data/<name>`` in the workspace; anything else is a path."""
    text = (text or "").strip()
    if not text:
        raise ConfigError("Give the dataset a name, e.g. my_labels.", zh="请给数据集起个名字，例如 my_labels。")
    if "/" not in text and "\\" not in text and not text.startswith((".", "~")):
        return paths.under(paths.datasets_dir(), text)
    return paths.resolve(text)


def _prompt(preset: str, lang: str) -> PromptSpec:
    return PromptSpec.from_preset(load_prompt_preset(preset), lang if lang in LANGS else "en")


def estimate(folder, out, preset, lang, limit, labeler: dict, lang_ui: str = "en"):
    """The cost estimate before starting, as one line (needs no API key); ``labeler``: the form's values by name."""
    try:
        config = labeler_config(labeler)
        model_name = config.model or (load_providers().get(config.provider, {}).get("models") or [""])[0]
        price = FREE if config.provider == LOCAL else price_for(model_name)
        found = estimate_folder(paths.resolve(folder), dataset_dir(out), _prompt(preset, lang), model_name,
                                max_pixels=config.max_pixels, price=price, limit=int(limit or 0) or None)
    except LabError as err:
        return localize(err, lang_ui)
    return localize(found.summary(), lang_ui)


def start(ctx, run, folder, out, preset, lang, limit, labeler: dict, retry=False, request: gr.Request = None):
    """Start (or resume, or retry the failures of) a run in the background; ``labeler``: the form's values by name."""
    lang_ui = request_lang(ctx, request)
    if run is not None and run.active:
        return run, i18n.text("label.busy", lang_ui), gr.Timer(active=True)
    try:
        out_dir = dataset_dir(out)
        prompt = _prompt(preset, lang)
        chosen = make_labeler(ctx, labeler_config(labeler))
        settings = chosen.config.public_dict() if hasattr(chosen, "config") else {"model": chosen.name, "local": True}
        job = job_settings(prompt, settings, preset=preset, lang=lang, limit=int(limit or 0) or None)
        run = start_labeling(paths.resolve(folder), out_dir, prompt, chosen, limit=int(limit or 0) or None,
                             retry_failed=retry, job=job)
    except LabError as err:
        return run, localize(err, lang_ui), gr.Timer(active=False)
    return run, i18n.text("label.started", lang_ui, out=out_dir), gr.Timer(active=True)


def stop(ctx, run, request: gr.Request = None):
    """Ask the page's run to stop; what is finished stays."""
    lang_ui = request_lang(ctx, request)
    if run is None or not run.active:
        return i18n.text("label.idle", lang_ui)
    run.stop()
    return i18n.text("label.stopping", lang_ui)


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
    state = localize(JobState(snap["state"]).label, lang)
    line = i18n.text("label.line", lang, state=state, ok=snap["ok"], failed=snap["failed"],
                     skipped=snap["skipped"], total=snap["total"], cost=snap["cost_usd"], rate=snap["rate"],
                     eta=_eta(snap["eta_s"]))
    text = f"`{bar}` {share:.0%}  \n{line}"
    return text + (f"  \n**{localize(snap['message'], lang)}**" if snap["message"] else "")


def _item_row(item: dict, lang: str) -> list:
    text = item["answer"] if item["status"] == "ok" else localize(item["reason"], lang)
    source = item["extra"].get("source") or Path(item["source"]).name
    return [source, item["status"], text, f"{item['prompt_tokens']}+{item['completion_tokens']}",
            round(item["cost_usd"], 6), round(item["seconds"], 2)]


def _failure_rows(out_dir: Path, lang: str) -> list[list]:
    return [[f["source"], f["status"], localize(f["reason"], lang)] for f in list_failures(out_dir)[:SHOWN_FAILURES]]


def refresh(ctx, run, out, request: gr.Request = None):
    """Progress line, thumbnails, latest items and failures; stops the timer once the run is over."""
    lang_ui = request_lang(ctx, request)
    if run is None:
        try:
            out_dir = dataset_dir(out)
        except LabError as err:
            return localize(err, lang_ui), [], [], [], gr.Timer(active=False)
        ok = sum(1 for _ in read_rows(out_dir / DATA_FILE))
        failures = _failure_rows(out_dir, lang_ui)
        message = i18n.text("label.on_disk", lang_ui, out=out_dir, ok=ok, failed=len(failures)) if out_dir.is_dir() else i18n.text("label.idle", lang_ui)
        return message, [], [], failures, gr.Timer(active=False)
    snap = run.snapshot()
    recent = snap["recent"][::-1]
    gallery = [(str(run.out_dir / item["extra"]["image"]), item["answer"][:200])
               for item in recent if item["status"] == "ok" and item["extra"].get("image")][:24]
    return (progress_markdown(snap, lang_ui), gallery, [_item_row(item, lang_ui) for item in recent],
            _failure_rows(run.out_dir, lang_ui), gr.Timer(active=run.active))


def upload(ctx, files, request: gr.Request = None):
    """Put uploaded images (or the images of uploaded zips) into a new folder under the workspace."""
    lang_ui = request_lang(ctx, request)
    if not files:
        return gr.update(), i18n.text("label.upload_first", lang_ui)
    try:
        folder = receive(files, IMAGE_SUFFIXES).folder
    except LabError as err:
        return gr.update(), localize(err, lang_ui)
    count = sum(1 for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not count:
        shutil.rmtree(folder, ignore_errors=True)
        return gr.update(), i18n.text("label.no_images", lang_ui)
    return str(folder), i18n.text("label.uploaded", lang_ui, n=count, folder=folder)


def review_load(out, lang: str = "en"):
    """Rows of the review table: id, source, answer, reject (unticked)."""
    try:
        items = list_items(dataset_dir(out))
    except LabError as err:
        raise gr.Error(localize(err, lang)) from None
    return [[item["id"], item["source"], item["answer"], False] for item in items]


def review_save(out, table, lang: str = "en"):
    """Apply the edited answers and the ticked rejections of the review table."""
    try:
        out_dir = dataset_dir(out)
        current = {item["id"]: item["answer"] for item in list_items(out_dir)}
        rows = table.get("data", []) if isinstance(table, dict) else (table or [])
        edits = {str(r[0]): str(r[2]) for r in rows if str(r[0]) in current and str(r[2]) != current[str(r[0])]}
        rejects = [str(r[0]) for r in rows if _ticked(r[3])]
        job = load_job(out_dir) or {}
        prompt = job.get("prompt") or {}
        saved = save_review(out_dir, edits, rejects, want_json=bool(prompt.get("want_json")),
                            expected_keys=prompt.get("expected_keys") or ())
    except LabError as err:
        return localize(err, lang), gr.update()
    return localize(saved.summary(), lang), review_load(out, lang)


def _ticked(value) -> bool:
    return value is True or str(value).strip().lower() in ("true", "1", "yes", "x", "✓")


def export(out, fmt, lang: str = "en"):
    """Export the labeled dataset into the workspace and offer it as a zip."""
    try:
        main_file, archive = export_for_download(dataset_dir(out), fmt)
    except LabError as err:
        return localize(err, lang), None
    return i18n.text("label.exported", lang, path=main_file), str(archive)


def _job_widgets() -> SimpleNamespace:
    """What to label, into which dataset, with which prompt."""
    sample = paths.SAMPLE_DATASET / "images"
    presets = list_prompt_presets()
    with gr.Row():
        folder = gr.Textbox(str(sample) if sample.is_dir() else "", label=t("label.images"), scale=3)
        files = gr.File(file_count="multiple", type="filepath", label=t("label.upload"), scale=2)
        out = gr.Textbox("labeled", label=t("label.out"), scale=2)
    with gr.Row():
        preset = gr.Dropdown(presets, value="sample_caption" if "sample_caption" in presets else None,
                             label=t("label.preset"), scale=3)
        lang = gr.Radio(list(LANGS), value="en", label=t("label.lang"), scale=1)
        limit = gr.Number(0, precision=0, minimum=0, label=t("label.limit"), scale=1)
    return SimpleNamespace(folder=folder, files=files, out=out, preset=preset, lang=lang, limit=limit)


def _run_widgets() -> SimpleNamespace:
    """Buttons, the progress line, the live thumbnails and tables."""
    with gr.Row():
        estimate_btn = gr.Button(t("label.estimate"))
        start_btn = gr.Button(t("label.start"), variant="primary")
        stop_btn = gr.Button(t("label.stop"), variant="stop")
        retry_btn = gr.Button(t("label.retry"))
    return SimpleNamespace(
        estimate=estimate_btn, start=start_btn, stop=stop_btn, retry=retry_btn,
        status=gr.Textbox(label=t("label.status")),
        progress=gr.Markdown(label=t("label.progress")),
        timer=gr.Timer(1.0, active=False),
        gallery=gr.Gallery(label=t("label.recent"), columns=8, height=220),
        items=i18n.table(ITEM_HEADERS, label=t("label.items"), wrap=True, interactive=False, max_height=320),
        failures=i18n.table(FAILURE_HEADERS, label=t("label.failures"), wrap=True, interactive=False,
                              max_height=240),
    )


def _review_widgets() -> SimpleNamespace:
    with gr.Accordion(t("label.review"), open=False):
        load = gr.Button(t("label.review_load"))
        table = i18n.table(REVIEW_HEADERS, datatype=["str", "str", "str", "bool"], type="array",
                             interactive=True, wrap=True, label=t("label.review_table"), static_columns=[0, 1])
        save = gr.Button(t("label.review_save"))
        with gr.Row():
            fmt = gr.Dropdown(list(FORMATS), value="llamafactory", label=t("label.format"))
            export_btn = gr.Button(t("label.export"))
            download = gr.File(label=t("label.download"))
    return SimpleNamespace(load=load, table=table, save=save, fmt=fmt, export=export_btn, download=download)


def create_tab(ctx) -> None:
    run = gr.State(None)  # this page's LabelRun: per browser session, never shared
    job = _job_widgets()
    form = labeler_form("label")
    ui = _run_widgets()
    review = _review_widgets()
    inputs = [run, job.folder, job.out, job.preset, job.lang, job.limit]
    labeler = form.named(*LABELER_INPUTS)

    # Gradio hands the request (for the page's language) only to a positional parameter
    # that comes before the others, hence these small wrappers.
    def on_upload(request: gr.Request, chosen):
        return upload(ctx, chosen, request)

    def on_start(request: gr.Request, *values, **settings):
        return start(ctx, *values, labeler=settings, request=request)

    def on_retry(request: gr.Request, *values, **settings):
        return start(ctx, *values, labeler=settings, retry=True, request=request)

    def on_stop(request: gr.Request, current):
        return stop(ctx, current, request)

    def on_tick(request: gr.Request, current, out_text):
        return refresh(ctx, current, out_text, request)

    def on_estimate(request: gr.Request, *values, **settings):
        return estimate(*values, labeler=settings, lang_ui=request_lang(ctx, request))

    job.files.upload(on_upload, job.files, [job.folder, ui.status], api_name="label_upload")
    job.preset.focus(lambda: gr.update(choices=list_prompt_presets()), outputs=job.preset, api_name="label_presets")
    ui.estimate.click(on_estimate, inputs[1:], ui.status, api_name="label_estimate", inputs_kwargs=labeler)
    ui.start.click(on_start, inputs, [run, ui.status, ui.timer], api_name="label_start", inputs_kwargs=labeler)
    ui.retry.click(on_retry, inputs, [run, ui.status, ui.timer], api_name="label_retry", inputs_kwargs=labeler)
    ui.stop.click(on_stop, run, ui.status, api_name="label_stop")
    ui.timer.tick(on_tick, [run, job.out], [ui.progress, ui.gallery, ui.items, ui.failures, ui.timer],
                  api_name="label_progress", show_progress="hidden")
    review.load.click(with_lang(ctx, review_load), job.out, review.table, api_name="label_review_load")
    review.save.click(with_lang(ctx, review_save), [job.out, review.table], [ui.status, review.table],
                      api_name="label_review_save")  # fmt: skip
    review.export.click(with_lang(ctx, export), [job.out, review.fmt], [ui.status, review.download],
                        api_name="label_export")  # fmt: skip
