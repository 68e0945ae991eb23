"""``python -m lab data ...``: check, export, import and split datasets."""

from __future__ import annotations

import argparse

from lab.formats import FORMATS
from lab.text import Msg

FORMAT_HELP = (
    "llamafactory (sharegpt + dataset_info.json), imagefolder (Hugging Face metadata.jsonl), "
    "openai (chat fine-tuning JSONL), swift (our own data.jsonl)"
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "data",
        help="check, export, import or split a dataset",
        description="Work with a dataset: a folder with data.jsonl (or one .jsonl file in it).",
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    listing = actions.add_parser(
        "list",
        help="the datasets of the workspace and the bundled sample, with their splits",
        description="Every dataset folder under data/ (and the bundled sample), each followed "
        "by its other .jsonl files (variants, train/val splits).",
    )
    listing.add_argument("--json", action="store_true", help="print JSON (with each dataset's counts)")
    listing.set_defaults(func=run_list)

    show = actions.add_parser(
        "show",
        help="a dataset's counts and one page of its records",
        description="Counts of records, images, answers and languages, then a page of records.",
    )
    show.add_argument("path", help="dataset folder or .jsonl file")
    show.add_argument("--page", type=int, default=1, help="page number, of 24 records each (default: 1)")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(func=run_show)

    check = actions.add_parser(
        "check",
        help="report every problem in a dataset, line by line",
        description="Check every record; exit status 1 when any record has a problem.",
    )
    check.add_argument("path", help="dataset folder or .jsonl file")
    check.add_argument(
        "--no-images", action="store_true", help="do not decode the images (faster; missing files are still reported)"
    )
    check.add_argument(
        "--family",
        default=None,
        help="the model family to train (qwen2_vl, qwen2_5_vl, qwen3_vl, ...): refuse videos it cannot take",
    )
    check.set_defaults(func=run_check)

    export = actions.add_parser(
        "export",
        help="write a dataset in another tool's format",
        description=f"Export a dataset. Formats: {FORMAT_HELP}.",
    )
    export.add_argument("path", help="dataset folder or .jsonl file")
    export.add_argument("--format", required=True, choices=FORMATS, help="target format")
    export.add_argument("--out", required=True, help="new (or empty) output folder")
    export.set_defaults(func=run_export)

    imp = actions.add_parser(
        "import",
        help="turn another tool's dataset into a dataset folder",
        description=f"Import a dataset. Formats: {FORMAT_HELP}.",
    )
    imp.add_argument("src", help="folder or file to import")
    imp.add_argument("--format", default=None, choices=FORMATS, help="source format (default: detect it)")
    imp.add_argument("--out", required=True, help="new (or empty) dataset folder to create")
    imp.set_defaults(func=run_import)

    split = actions.add_parser(
        "split",
        help="write train.jsonl and val.jsonl next to the dataset",
        description=(
            "Split a dataset into train.jsonl and val.jsonl; a record's side depends only on its id and the seed."
        ),
    )
    split.add_argument("path", help="dataset folder or .jsonl file")
    split.add_argument("--val-ratio", type=float, default=0.1, help="share of records for validation (default: 0.1)")
    split.add_argument("--seed", type=int, default=42, help="split seed (default: 42)")
    split.set_defaults(func=run_split)


def run_check(args: argparse.Namespace) -> int:
    from lab.dataset_check import validate_dataset
    from lab.errors import cli_lang, localize

    report = validate_dataset(args.path, check_images=not args.no_images, family=args.family)
    lang = cli_lang()
    for fault in report.faults:
        print(localize(fault, lang))
    print(localize(report.summary(), lang))
    return 0 if report.ok else 1


def run_export(args: argparse.Namespace) -> int:
    from lab.errors import cli_lang, localize
    from lab.formats import export_with_summary

    exported = export_with_summary(args.path, args.format, args.out)
    print(localize(exported.summary(), cli_lang()))
    return 0


def run_import(args: argparse.Namespace) -> int:
    from lab.dataset_check import validate_dataset
    from lab.errors import cli_lang, localize
    from lab.formats import import_dataset

    folder = import_dataset(args.src, args.format, args.out)
    lang = cli_lang()
    print(localize(Msg("Imported {src} into {folder}.", src=args.src, folder=folder), lang))
    report = validate_dataset(folder)
    for fault in report.faults[:20]:
        print(localize(fault, lang))
    print(localize(report.summary(), lang))
    return 0


def run_split(args: argparse.Namespace) -> int:
    from lab.dataset import load_records, write_split
    from lab.errors import cli_lang, localize

    train_path, val_path = write_split(args.path, args.val_ratio, args.seed)
    n_train, n_val = len(load_records(train_path)), len(load_records(val_path))
    wrote = Msg(
        "Wrote {n_train} records to {train_path} and {n_val} to {val_path}.",
        n_train=n_train,
        train_path=train_path,
        n_val=n_val,
        val_path=val_path,
    )
    print(localize(wrote, cli_lang()))
    return 0


def _stats(path) -> dict:
    from dataclasses import asdict

    from lab.dataset import dataset_stats

    return asdict(dataset_stats(path))


def run_list(args: argparse.Namespace) -> int:
    import json

    from lab.dataset import list_datasets

    found = list_datasets(include_variants=True)
    if args.json:
        print(json.dumps([{"path": str(p), **_stats(p)} for p in found], ensure_ascii=False, indent=2))
        return 0
    for path in found:
        print(path)
    return 0


def run_show(args: argparse.Namespace) -> int:
    import json

    from lab import paths
    from lab.dataset import load_records
    from lab.errors import cli_lang, localize
    from lab.gallery import PAGE_SIZE, page_count
    from lab.text import Msg

    path = paths.resolve(args.path)
    records, stats = load_records(path), _stats(path)
    pages = page_count(len(records))
    number = min(max(args.page, 1), pages)
    rows = [_row(r) for r in records[(number - 1) * PAGE_SIZE : number * PAGE_SIZE]]
    if args.json:
        print(
            json.dumps(
                {"path": str(path), **stats, "page": number, "pages": pages, "records": rows},
                ensure_ascii=False,
                indent=2,
            )
        )
        return 0
    languages = ", ".join(f"{k}: {v}" for k, v in sorted(stats["languages"].items()))
    lang = cli_lang()
    print(
        localize(
            Msg(
                "{records} records · {images} images · {turns} answers · {languages}",
                records=stats["records"],
                images=stats["images"],
                turns=stats["turns"],
                languages=languages,
            ),
            lang,
        )
    )
    for row in rows:
        print("  ".join(" ".join(str(row[k]).split())[:80] for k in ("id", "images", "prompt", "answer")))
    print(localize(Msg("Page {page} of {pages}", page=number, pages=pages), lang))
    return 0


def _row(record: dict) -> dict:
    messages = [m for m in record.get("messages") or [] if isinstance(m, dict)]
    prompt = next((m.get("content", "") for m in messages if m.get("role") == "user"), "")
    answer = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "assistant"), "")
    images = record.get("images") or []
    return {
        "id": str(record.get("id", "")),
        "images": ", ".join(map(str, images)) if isinstance(images, list) else images,
        "prompt": prompt,
        "answer": answer,
    }
