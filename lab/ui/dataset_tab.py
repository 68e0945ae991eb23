"""Dataset tab: browse a dataset folder, check it, split it, export it, import one."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import gradio as gr

from lab import paths
from lab.dataset import dataset_stats, list_datasets, load_records, write_split
from lab.dataset_check import validate_dataset
from lab.errors import LabError, localize
from lab.formats import FORMATS, export_for_download, import_dataset
from lab.gallery import dataset_page, thumbnail_dir
from lab.ui import i18n
from lab.ui.i18n import t, with_lang
from lab.uploads import receive

STRINGS = {
    "data.choose": ("Dataset (folder or .jsonl file)", "数据集（文件夹或 .jsonl 文件）"),
    "data.refresh": ("Refresh list", "刷新列表"),
    "data.show": ("Show", "查看"),
    "data.stats": ("Summary", "概况"),
    "data.gallery": ("Images", "图片"),
    "data.prev": ("◀ Previous", "◀ 上一页"),
    "data.next": ("Next ▶", "下一页 ▶"),
    "data.page": ("Page", "页码"),
    "data.page_of": ("Page {page} of {pages}", "第 {page} 页，共 {pages} 页"),
    "data.skipped": ("{n} image(s) on this page could not be shown:", "本页有 {n} 张图片无法显示："),
    "data.records": ("Records", "样本"),
    "data.check": ("Check", "校验"),
    "data.report": ("Check report", "校验报告"),
    "data.split": ("Split train / validation", "划分训练集 / 验证集"),
    "data.val_ratio": ("Validation ratio", "验证集比例"),
    "data.seed": ("Seed", "随机种子"),
    "data.format": ("Export format", "导出格式"),
    "data.export": ("Export", "导出"),
    "data.download": ("Download", "下载"),
    "data.import_file": ("Import: a .json / .jsonl file or a .zip of a dataset folder", "导入：.json / .jsonl 文件或数据集文件夹的 .zip"),
    "data.import_name": ("Name of the new dataset", "新数据集名称"),
    "data.import": ("Import", "导入"),
    "data.status": ("Status", "状态"),
    "data.summary": ("{records} records · {images} images · {turns} answers · {languages}",
                     "{records} 条样本 · {images} 张图片 · {turns} 个回答 · {languages}"),
    "data.split_done": ("{n} records → {path}", "{n} 条样本 → {path}"),
    "data.exported": ("Exported to {path}", "已导出到 {path}"),
    "data.choose_file": ("Choose a file to import first.", "请先选择要导入的文件。"),
    "data.not_importable": ("{name} is neither a .json / .jsonl file nor a .zip.",
                            "{name} 既不是 .json / .jsonl 文件，也不是 .zip。"),
    "data.bad_name": ("'{name}' is not a usable dataset name: use letters, digits, '-' and '_'.",
                      "'{name}' 不能用作数据集名称：请使用字母、数字、'-' 和 '_'。"),
}
i18n.register(STRINGS)


def _choices() -> list[str]:
    return [str(p) for p in list_datasets(include_variants=True)]


def summary_line(path: str, lang: str = "en") -> str:
    """Counts of records, images, answers and languages, as one line."""
    try:
        stats = dataset_stats(paths.resolve(path))
    except LabError as err:
        return localize(err, lang)
    languages = ", ".join(f"{k}: {v}" for k, v in sorted(stats.languages.items()))
    return i18n.text("data.summary", lang, records=stats.records, images=stats.images, turns=stats.turns,
                     languages=languages)  # fmt: skip


def show_dataset(path: str, lang: str = "en"):
    """Summary line and the first page: thumbnails, records table, page number, "page 1 of n"."""
    gallery, rows, number, line = show_page(path, 1, lang)
    return summary_line(path, lang), gallery, rows, number, line if gallery or rows else ""


def show_page(path: str, number, lang: str = "en"):
    """One page of the dataset: thumbnails, records table, page number, "page k of n" and what was left out."""
    try:
        page = dataset_page(paths.resolve(path), int(number or 1))
    except (LabError, ValueError) as err:
        return [], [], 1, localize(err, lang)
    rows = []
    for record in page.records:
        messages = record.get("messages") or []
        prompt = next((m["content"] for m in messages if m.get("role") == "user"), "")
        answer = next((m["content"] for m in reversed(messages) if m.get("role") == "assistant"), "")
        rows.append([str(record.get("id", "")), prompt, answer])
    line = i18n.text("data.page_of", lang, page=page.number, pages=page.pages)
    if page.skipped:
        lines = [i18n.text("data.skipped", lang, n=len(page.skipped)), *(f"- {localize(s, lang)}" for s in page.skipped)]
        line = "\n\n".join([line, "\n".join(lines)])
    return page.images, rows, page.number, line


def previous_page(path: str, number, lang: str = "en"):
    return show_page(path, int(number or 1) - 1, lang)


def next_page(path: str, number, lang: str = "en"):
    return show_page(path, int(number or 1) + 1, lang)


def check_dataset(path: str, lang: str = "en") -> str:
    try:
        report = validate_dataset(paths.resolve(path))
    except LabError as err:
        return localize(err, lang)
    faults = (f"- {localize(fault, lang)}" for fault in report.faults[:200])
    return "\n".join([localize(report.summary(), lang), *faults])


def split(path: str, val_ratio: float, seed: float, lang: str = "en") -> str:
    try:
        parts = write_split(paths.resolve(path), float(val_ratio), int(seed))
    except LabError as err:
        return localize(err, lang)
    return "\n".join(i18n.text("data.split_done", lang, n=len(load_records(part)), path=part) for part in parts)


def export(path: str, fmt: str, lang: str = "en"):
    """Export into the workspace and offer the folder as a zip."""
    try:
        main_file, archive = export_for_download(paths.resolve(path), fmt)
    except LabError as err:
        return localize(err, lang), None
    return i18n.text("data.exported", lang, path=main_file), str(archive)


def import_upload(upload: str | None, name: str, lang: str = "en"):
    if not upload:
        return i18n.text("data.choose_file", lang), gr.update()
    name = (name or Path(upload).stem).strip()
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return i18n.text("data.bad_name", lang, name=name), gr.update()
    target = paths.datasets_dir() / name
    received = None
    try:
        received = receive([upload], (".json", ".jsonl"))
        if not received.entries:
            return i18n.text("data.not_importable", lang, name=Path(upload).name), gr.update()
        entry = received.entries[0]
        folder = import_dataset(_single_top_folder(entry) if entry.is_dir() else entry, None, target)
        report = validate_dataset(folder)
    except LabError as err:
        return localize(err, lang), gr.update()
    finally:
        if received is not None:  # the upload was only on its way into the new dataset folder
            shutil.rmtree(received.folder, ignore_errors=True)
    return localize(report.summary(), lang), gr.update(choices=_choices(), value=str(folder))


def _single_top_folder(root: Path) -> Path:
    entries = [p for p in root.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else root


def _page_widgets(dataset, first) -> SimpleNamespace:
    """The gallery of one page, its page controls and "page k of n", and the page's records table."""
    gallery = gr.Gallery(first[1], label=t("data.gallery"), columns=8, height=220, object_fit="contain", allow_preview=True)
    with gr.Row():
        prev_btn = gr.Button(t("data.prev"), scale=1, min_width=100)
        page_number = gr.Number(first[3], precision=0, label=t("data.page"), scale=1, min_width=100)
        next_btn = gr.Button(t("data.next"), scale=1, min_width=100)
        page_line = gr.Markdown(first[4])
    i18n.at_page_load(lambda path, number, lang: show_page(path, number, lang)[3] if path else "",
                      [dataset, page_number], page_line)  # fmt: skip
    table = i18n.table(["id", "prompt", "answer"], value=first[2] or None, label=t("data.records"), wrap=True,
                       max_height=360)  # fmt: skip
    return SimpleNamespace(prev=prev_btn, next=next_btn, outputs=[gallery, table, page_number, page_line])


def create_tab(ctx) -> None:
    gr.set_static_paths([thumbnail_dir()])  # served as they are: small, made by us, no copy per visitor
    choices = _choices()
    with gr.Row():
        dataset = gr.Dropdown(choices, value=choices[0] if choices else None, label=t("data.choose"), allow_custom_value=True, scale=4)
        refresh = gr.Button(t("data.refresh"), scale=1)
        show = gr.Button(t("data.show"), variant="primary", scale=1)
    first = show_dataset(choices[0]) if choices else ("", [], [], 1, "")
    summary = gr.Markdown(first[0])
    i18n.at_page_load(lambda path, lang: summary_line(path, lang) if path else "", dataset, summary)
    pages = _page_widgets(dataset, first)
    gallery, table, page_number, page_line = pages.outputs
    with gr.Row():
        with gr.Column():
            check = gr.Button(t("data.check"))
            report = gr.Textbox(label=t("data.report"), lines=4)
        with gr.Column():
            val_ratio = gr.Slider(0.0, 0.5, value=0.1, step=0.01, label=t("data.val_ratio"))
            seed = gr.Number(42, precision=0, label=t("data.seed"))
            split_btn = gr.Button(t("data.split"))
            split_out = gr.Textbox(label=t("data.status"), lines=2)
        with gr.Column():
            fmt = gr.Dropdown(list(FORMATS), value="llamafactory", label=t("data.format"))
            export_btn = gr.Button(t("data.export"))
            export_out = gr.Textbox(label=t("data.status"))
            download = gr.File(label=t("data.download"))
    with gr.Row():
        upload = gr.File(label=t("data.import_file"), file_types=[".json", ".jsonl", ".zip"], type="filepath")
        import_name = gr.Textbox(label=t("data.import_name"))
        import_btn = gr.Button(t("data.import"))
        import_out = gr.Textbox(label=t("data.status"))

    refresh.click(lambda: gr.update(choices=_choices()), outputs=dataset, api_name="dataset_list")
    shown = [summary, gallery, table, page_number, page_line]
    show.click(with_lang(ctx, show_dataset), dataset, shown, api_name="dataset_show")
    dataset.change(with_lang(ctx, show_dataset), dataset, shown, api_name="dataset_select",
                   api_visibility="undocumented")  # fmt: skip
    page_number.submit(with_lang(ctx, show_page), [dataset, page_number], pages.outputs, api_name="dataset_page")
    pages.prev.click(with_lang(ctx, previous_page), [dataset, page_number], pages.outputs, api_name="dataset_page_prev")
    pages.next.click(with_lang(ctx, next_page), [dataset, page_number], pages.outputs, api_name="dataset_page_next")
    check.click(with_lang(ctx, check_dataset), dataset, report, api_name="dataset_check")
    split_btn.click(with_lang(ctx, split), [dataset, val_ratio, seed], split_out, api_name="dataset_split")
    export_btn.click(with_lang(ctx, export), [dataset, fmt], [export_out, download], api_name="dataset_export")
    import_btn.click(with_lang(ctx, import_upload), [upload, import_name], [import_out, dataset],
                     api_name="dataset_import")  # fmt: skip
