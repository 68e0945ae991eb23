"""Dataset tab: browse a dataset folder, check it, split it, export it, import one."""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from pathlib import Path

import gradio as gr

from lab import paths
from lab.dataset import dataset_stats, list_datasets, load_records, write_split
from lab.dataset_check import validate_dataset
from lab.errors import LabError, localize
from lab.formats import FORMATS, export_dataset, import_dataset
from lab.ui import i18n
from lab.ui.i18n import t, with_lang

STRINGS = {
    "data.choose": ("Dataset (folder or .jsonl file)", "数据集（文件夹或 .jsonl 文件）"),
    "data.refresh": ("Refresh list", "刷新列表"),
    "data.show": ("Show", "查看"),
    "data.stats": ("Summary", "概况"),
    "data.gallery": ("Images", "图片"),
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
    "data.bad_name": ("'{name}' is not a usable dataset name: use letters, digits, '-' and '_'.",
                      "'{name}' 不能用作数据集名称：请使用字母、数字、'-' 和 '_'。"),
}
i18n.register(STRINGS)

PREVIEW_LIMIT = 48


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
    """Summary line, gallery and table of the first records."""
    try:
        records = load_records(paths.resolve(path), absolute_images=True)
    except LabError as err:
        return localize(err, lang), [], []
    summary = summary_line(path, lang)
    gallery, rows = [], []
    for record in records[:PREVIEW_LIMIT]:
        messages = record.get("messages") or []
        prompt = next((m["content"] for m in messages if m.get("role") == "user"), "")
        answer = next((m["content"] for m in reversed(messages) if m.get("role") == "assistant"), "")
        rows.append([str(record.get("id", "")), prompt, answer])
        for image in record.get("images") or []:
            gallery.append((str(image), str(record.get("id", ""))))
    return summary, gallery, rows


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
        source = paths.resolve(path)
        out_dir = paths.workspace() / "exports" / f"{source.stem if source.is_file() else source.name}-{fmt}"
        if out_dir.exists():
            shutil.rmtree(out_dir)
        main_file = export_dataset(source, fmt, out_dir)
    except LabError as err:
        return localize(err, lang), None
    archive = shutil.make_archive(str(out_dir), "zip", root_dir=out_dir)
    return i18n.text("data.exported", lang, path=main_file), archive


def import_upload(upload: str | None, name: str, lang: str = "en"):
    if not upload:
        return i18n.text("data.choose_file", lang), gr.update()
    name = (name or Path(upload).stem).strip()
    if not name or "/" in name or "\\" in name or name.startswith("."):
        return i18n.text("data.bad_name", lang, name=name), gr.update()
    try:
        target = paths.under(paths.datasets_dir(), name, write=True)
        with tempfile.TemporaryDirectory() as tmp:
            source = Path(upload)
            if zipfile.is_zipfile(source):
                with zipfile.ZipFile(source) as archive:
                    # zipfile drops '..' and absolute parts of member names and writes a symlink
                    # entry as a plain file, so nothing lands outside tmp.
                    archive.extractall(tmp)
                source = _single_top_folder(Path(tmp))
            else:
                source = Path(shutil.copy(source, tmp))
            folder = import_dataset(source, None, target, bundle=tmp)  # records may only name files of the upload
        report = validate_dataset(folder)
    except LabError as err:
        return localize(err, lang), gr.update()
    return localize(report.summary(), lang), gr.update(choices=_choices(), value=str(folder))


def _single_top_folder(root: Path) -> Path:
    entries = [p for p in root.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else root


def create_tab(ctx) -> None:
    choices = _choices()
    with gr.Row():
        dataset = gr.Dropdown(choices, value=choices[0] if choices else None, label=t("data.choose"), allow_custom_value=True, scale=4)
        refresh = gr.Button(t("data.refresh"), scale=1)
        show = gr.Button(t("data.show"), variant="primary", scale=1)
    first = show_dataset(choices[0]) if choices else ("", [], [])
    summary = gr.Markdown(first[0])
    i18n.at_page_load(lambda path, lang: summary_line(path, lang) if path else "", dataset, summary)
    gallery = gr.Gallery(first[1], label=t("data.gallery"), columns=8, height=220, object_fit="contain", allow_preview=True)
    table = i18n.table(["id", "prompt", "answer"], value=first[2] or None, label=t("data.records"), wrap=True,
                       max_height=360)  # fmt: skip
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
    show.click(with_lang(ctx, show_dataset), dataset, [summary, gallery, table], api_name="dataset_show")
    dataset.change(with_lang(ctx, show_dataset), dataset, [summary, gallery, table], api_name="dataset_select",
                   api_visibility="undocumented")  # fmt: skip
    check.click(with_lang(ctx, check_dataset), dataset, report, api_name="dataset_check")
    split_btn.click(with_lang(ctx, split), [dataset, val_ratio, seed], split_out, api_name="dataset_split")
    export_btn.click(with_lang(ctx, export), [dataset, fmt], [export_out, download], api_name="dataset_export")
    import_btn.click(with_lang(ctx, import_upload), [upload, import_name], [import_out, dataset],
                     api_name="dataset_import")  # fmt: skip
