"""Dataset tab: browse a dataset folder, check it, split it, export it, import one."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from lab import paths
from lab.dataset import dataset_stats, list_datasets, load_records, write_split
from lab.dataset_check import validate_dataset
from lab.errors import localize
from lab.formats import FORMATS, export_for_download, import_dataset
from lab.formats.importers import upload_source
from lab.gallery import dataset_page, thumbnail_dir
from lab.text import Msg
from lab.ui import i18n
from lab.ui.i18n import t
from lab.uploads import receive


def _choices() -> list[str]:
    return [str(p) for p in list_datasets(include_variants=True)]


def summary_line(path: str, lang: str = "en") -> str:
    """Counts of records, images, answers and languages, as one line."""
    stats = dataset_stats(paths.resolve(path))
    languages = ", ".join(f"{k}: {v}" for k, v in sorted(stats.languages.items()))
    return localize(
        Msg(
            "{records} records · {images} images · {turns} answers · {languages}",
            records=stats.records,
            images=stats.images,
            turns=stats.turns,
            languages=languages,
        ),
        lang,
    )


def show_dataset(path: str, lang: str = "en"):
    """Summary line and the first page: thumbnails, records table, page number, "page 1 of n"."""
    gallery, rows, number, line = show_page(path, 1, lang)
    return summary_line(path, lang), gallery, rows, number, line if gallery or rows else ""


def show_page(path: str, number, lang: str = "en"):
    """One page of the dataset: thumbnails, records table, page number, "page k of n" and what was left out."""
    try:
        page = dataset_page(paths.resolve(path), int(number or 1))
    except ValueError as err:  # a page number that is not a number
        return [], [], 1, localize(err, lang)
    rows = []
    for record in page.records:
        messages = record.get("messages") or []
        prompt = next((m["content"] for m in messages if m.get("role") == "user"), "")
        answer = next((m["content"] for m in reversed(messages) if m.get("role") == "assistant"), "")
        rows.append([str(record.get("id", "")), prompt, answer])
    line = localize(Msg("Page {page} of {pages}", page=page.number, pages=page.pages), lang)
    if page.skipped:
        lines = [
            localize(Msg("{n} image(s) on this page could not be shown:", n=len(page.skipped)), lang),
            *(f"- {localize(s, lang)}" for s in page.skipped),
        ]
        line = "\n\n".join([line, "\n".join(lines)])
    return page.images, rows, page.number, line


def _no_page(sentence: str):
    """The page's outputs when the dataset cannot be read: the sentence in place of "page k of n"."""
    return [], [], 1, sentence


def previous_page(path: str, number, lang: str = "en"):
    return show_page(path, int(number or 1) - 1, lang)


def next_page(path: str, number, lang: str = "en"):
    return show_page(path, int(number or 1) + 1, lang)


def check_dataset(path: str, lang: str = "en", family: str | None = None) -> str:
    """The check report; with ``family`` (the loaded model's) a video it cannot take is a fault too."""
    report = validate_dataset(paths.resolve(path), family=family)
    faults = (f"- {localize(fault, lang)}" for fault in report.faults[:200])
    return "\n".join([localize(report.summary(), lang), *faults])


def split(path: str, val_ratio: float, seed: float, lang: str = "en") -> str:
    parts = write_split(paths.resolve(path), float(val_ratio), int(seed))
    lines = (Msg("{n} records → {path}", n=len(load_records(part)), path=part) for part in parts)
    return "\n".join(localize(line, lang) for line in lines)


def export(path: str, fmt: str, lang: str = "en"):
    """Export into the workspace and offer the folder as a zip."""
    exported, archive = export_for_download(paths.resolve(path), fmt)
    return localize(exported.summary(), lang), str(archive)


def import_upload(upload: list | str | None, name: str, lang: str = "en"):
    """Import an upload: a .json / .jsonl file (with a .zip of its images), or a .zip of a dataset folder."""
    uploads = [upload] if isinstance(upload, str) else list(upload or [])
    if not uploads:
        return localize(Msg("Choose a file to import first."), lang), gr.update()
    records = [u for u in uploads if Path(u).suffix.lower() in (".json", ".jsonl")]
    name = (name or Path((records or uploads)[0]).stem).strip()
    if not name or "/" in name or "\\" in name or name.startswith("."):
        refused = Msg("'{name}' is not a usable dataset name: use letters, digits, '-' and '_'.", name=name)
        return localize(refused, lang), gr.update()
    received = None
    try:
        target = paths.under(paths.datasets_dir(), name, write=True)
        received = receive(uploads, (".json", ".jsonl"))
        if not received.entries:
            refused = Msg("{name} is neither a .json / .jsonl file nor a .zip.", name=Path(uploads[0]).name)
            return localize(refused, lang), gr.update()
        source = upload_source(received.entries)
        # Records may only name files that came with the upload.
        folder = import_dataset(source, None, target, bundle=received.folder)
        report = validate_dataset(folder)
    finally:
        if received is not None:  # the upload was only on its way into the new dataset folder
            shutil.rmtree(received.folder, ignore_errors=True)
    return localize(report.summary(), lang), gr.update(choices=_choices(), value=str(folder))


def _page_widgets(dataset, first) -> SimpleNamespace:
    """The gallery of one page, its page controls and "page k of n", and the page's records table."""
    gallery = gr.Gallery(first[1], label=t("Images"), columns=8, height=220, object_fit="contain", allow_preview=True)
    with gr.Row():
        prev_btn = gr.Button(t("◀ Previous"), scale=1, min_width=100)
        page_number = gr.Number(first[3], precision=0, label=t("Page"), scale=1, min_width=100)
        next_btn = gr.Button(t("Next ▶"), scale=1, min_width=100)
        page_line = gr.Markdown(first[4])
    i18n.at_page_load(
        lambda path, number, lang: show_page(path, number, lang)[3] if path else "",
        [dataset, page_number],
        page_line,
        on_error=str,
        api_name="dataset_page_text",
    )
    table = i18n.table(
        ["id", "prompt", "answer"], value=first[2] or None, label=t("Records"), wrap=True, max_height=360
    )
    return SimpleNamespace(prev=prev_btn, next=next_btn, outputs=[gallery, table, page_number, page_line])


def create_tab(ctx) -> None:
    gr.set_static_paths([thumbnail_dir()])  # served as they are: small, made by us, no copy per visitor
    choices = _choices()
    with gr.Row():
        dataset = gr.Dropdown(
            choices,
            value=choices[0] if choices else None,
            allow_custom_value=True,
            label=t("Dataset (folder or .jsonl file)"),
            scale=4,
        )
        refresh = gr.Button(t("Refresh list"), scale=1)
        show = gr.Button(t("Show"), variant="primary", scale=1)
    # A dataset that cannot be read is one sentence in the summary (here and on each event below).
    on_show = i18n.handler(ctx, show_dataset, on_error=lambda sentence: (sentence, [], [], 1, ""))
    first = on_show(None, choices[0]) if choices else ("", [], [], 1, "")
    summary = gr.Markdown(first[0])
    i18n.at_page_load(
        lambda path, lang: summary_line(path, lang) if path else "",
        dataset,
        summary,
        on_error=str,
        api_name="dataset_summary_text",
    )
    pages = _page_widgets(dataset, first)
    gallery, table, page_number, page_line = pages.outputs
    with gr.Row():
        with gr.Column():
            check = gr.Button(t("Check"))
            report = gr.Textbox(label=t("Check report"), lines=4)
        with gr.Column():
            val_ratio = gr.Slider(0.0, 0.5, value=0.1, step=0.01, label=t("Validation ratio"))
            seed = gr.Number(42, precision=0, label=t("Seed"))
            split_btn = gr.Button(t("Split train / validation"))
            split_out = gr.Textbox(label=t("Status"), lines=2)
        with gr.Column():
            fmt = gr.Dropdown(list(FORMATS), value="llamafactory", label=t("Export format"))
            export_btn = gr.Button(t("Export"))
            export_out = gr.Textbox(label=t("Status"))
            download = gr.File(label=t("Download"))
    with gr.Row():
        upload = gr.File(
            label=t("Import: a .json / .jsonl file with a .zip of its images, or a .zip of a dataset folder"),
            file_types=[".json", ".jsonl", ".zip"],
            file_count="multiple",
            type="filepath",
        )
        import_name = gr.Textbox(label=t("Name of the new dataset"))
        import_btn = gr.Button(t("Import"))
        import_out = gr.Textbox(label=t("Status"))

    refresh.click(lambda: gr.update(choices=_choices()), outputs=dataset, api_name="dataset_list")
    shown = [summary, gallery, table, page_number, page_line]
    show.click(on_show, dataset, shown, api_name="dataset_show")
    dataset.change(on_show, dataset, shown, api_name="dataset_select", api_visibility="undocumented")
    page_number.submit(
        i18n.handler(ctx, show_page, on_error=_no_page), [dataset, page_number], pages.outputs, api_name="dataset_page"
    )
    pages.prev.click(
        i18n.handler(ctx, previous_page, on_error=_no_page),
        [dataset, page_number],
        pages.outputs,
        api_name="dataset_page_prev",
    )
    pages.next.click(
        i18n.handler(ctx, next_page, on_error=_no_page),
        [dataset, page_number],
        pages.outputs,
        api_name="dataset_page_next",
    )

    def check_for_loaded_model(path: str, lang: str = "en") -> str:
        return check_dataset(path, lang, getattr(ctx.handle.loaded, "family", None))

    check.click(i18n.handler(ctx, check_for_loaded_model, on_error=str), dataset, report, api_name="dataset_check")
    split_btn.click(
        i18n.handler(ctx, split, on_error=str), [dataset, val_ratio, seed], split_out, api_name="dataset_split"
    )
    export_btn.click(
        i18n.handler(ctx, export, on_error=lambda sentence: (sentence, None)),
        [dataset, fmt],
        [export_out, download],
        api_name="dataset_export",
    )
    import_btn.click(
        i18n.handler(ctx, import_upload, on_error=lambda sentence: (sentence, gr.update())),
        [upload, import_name],
        [import_out, dataset],
        api_name="dataset_import",
    )
