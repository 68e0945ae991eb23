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
from lab.errors import localize
from lab.formats import FORMATS, export_dataset, import_dataset
from lab.text import Msg
from lab.ui import i18n
from lab.ui.i18n import t

PREVIEW_LIMIT = 48


def _choices() -> list[str]:
    return [str(p) for p in list_datasets(include_variants=True)]


def summary_line(path: str, lang: str = "en") -> str:
    """Counts of records, images, answers and languages, as one line."""
    stats = dataset_stats(paths.resolve(path))
    languages = ", ".join(f"{k}: {v}" for k, v in sorted(stats.languages.items()))
    return localize(Msg("{records} records · {images} images · {turns} answers · {languages}",
                        records=stats.records, images=stats.images, turns=stats.turns,
                        languages=languages), lang)  # fmt: skip


def show_dataset(path: str, lang: str = "en"):
    """Summary line, gallery and table of the first records."""
    records = load_records(paths.resolve(path), absolute_images=True)
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
    report = validate_dataset(paths.resolve(path))
    faults = (f"- {localize(fault, lang)}" for fault in report.faults[:200])
    return "\n".join([localize(report.summary(), lang), *faults])


def split(path: str, val_ratio: float, seed: float, lang: str = "en") -> str:
    parts = write_split(paths.resolve(path), float(val_ratio), int(seed))
    lines = (Msg("{n} records → {path}", n=len(load_records(part)), path=part) for part in parts)
    return "\n".join(localize(line, lang) for line in lines)


def export(path: str, fmt: str, lang: str = "en"):
    """Export into the workspace and offer the folder as a zip."""
    source = paths.resolve(path)
    out_dir = paths.workspace() / "exports" / f"{source.stem if source.is_file() else source.name}-{fmt}"
    if out_dir.exists():
        shutil.rmtree(out_dir)
    main_file = export_dataset(source, fmt, out_dir)
    archive = shutil.make_archive(str(out_dir), "zip", root_dir=out_dir)
    return localize(Msg("Exported to {path}", path=main_file), lang), archive


def import_upload(upload: str | None, name: str, lang: str = "en"):
    if not upload:
        return localize(Msg("Choose a file to import first."), lang), gr.update()
    name = (name or Path(upload).stem).strip()
    if not name or "/" in name or "\\" in name or name.startswith("."):
        refused = Msg("'{name}' is not a usable dataset name: use letters, digits, '-' and '_'.", name=name)
        return localize(refused, lang), gr.update()
    target = paths.datasets_dir() / name
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(upload)
        if zipfile.is_zipfile(source):
            with zipfile.ZipFile(source) as archive:
                archive.extractall(tmp)  # zipfile drops '..' and absolute parts of member names
            source = _single_top_folder(Path(tmp))
        folder = import_dataset(source, None, target)
    report = validate_dataset(folder)
    return localize(report.summary(), lang), gr.update(choices=_choices(), value=str(folder))


def _single_top_folder(root: Path) -> Path:
    entries = [p for p in root.iterdir() if not p.name.startswith(("__MACOSX", "."))]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else root


def create_tab(ctx) -> None:
    choices = _choices()
    with gr.Row():
        dataset = gr.Dropdown(choices, value=choices[0] if choices else None, allow_custom_value=True,
                              label=t("Dataset (folder or .jsonl file)"), scale=4)
        refresh = gr.Button(t("Refresh list"), scale=1)
        show = gr.Button(t("Show"), variant="primary", scale=1)
    # A dataset that cannot be read is one sentence in the summary (here and on each event below).
    on_show = i18n.handler(ctx, show_dataset, on_error=lambda sentence: (sentence, [], []))
    first = on_show(None, choices[0]) if choices else ("", [], [])
    summary = gr.Markdown(first[0])
    i18n.at_page_load(lambda path, lang: summary_line(path, lang) if path else "", dataset, summary,
                      on_error=str)
    gallery = gr.Gallery(first[1], label=t("Images"), columns=8, height=220, object_fit="contain", allow_preview=True)
    table = i18n.table(["id", "prompt", "answer"], value=first[2] or None, label=t("Records"), wrap=True,
                       max_height=360)  # fmt: skip
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
        upload = gr.File(label=t("Import: a .json / .jsonl file or a .zip of a dataset folder"),
                         file_types=[".json", ".jsonl", ".zip"], type="filepath")
        import_name = gr.Textbox(label=t("Name of the new dataset"))
        import_btn = gr.Button(t("Import"))
        import_out = gr.Textbox(label=t("Status"))

    refresh.click(lambda: gr.update(choices=_choices()), outputs=dataset, api_name="dataset_list")
    show.click(on_show, dataset, [summary, gallery, table], api_name="dataset_show")
    dataset.change(on_show, dataset, [summary, gallery, table], api_name="dataset_select",
                   api_visibility="undocumented")  # fmt: skip
    check.click(i18n.handler(ctx, check_dataset, on_error=str), dataset, report, api_name="dataset_check")
    split_btn.click(i18n.handler(ctx, split, on_error=str), [dataset, val_ratio, seed], split_out,
                    api_name="dataset_split")  # fmt: skip
    export_btn.click(i18n.handler(ctx, export, on_error=lambda sentence: (sentence, None)), [dataset, fmt],
                     [export_out, download], api_name="dataset_export")  # fmt: skip
    import_btn.click(i18n.handler(ctx, import_upload, on_error=lambda sentence: (sentence, gr.update())),
                     [upload, import_name], [import_out, dataset], api_name="dataset_import")  # fmt: skip
