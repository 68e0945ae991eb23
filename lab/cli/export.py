"""``python -m lab export``: merge a run's LoRA adapter into its base and save a complete model folder."""

from __future__ import annotations

import argparse

from lab.cli.eval import add_source_flags, source_options
from lab.export import ExportSettings
from lab.settings import add_flags


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="merge a LoRA run into its base model and save a complete model folder",
        description="Merge a run's LoRA adapter into its base model and save a folder that loads with from_pretrained "
        "and serves with vLLM (safetensors, processor, tokenizer, chat template, generation config).",
    )
    parser.add_argument(
        "--adapter", required=True, metavar="RUN", help="the training run: a name under checkpoints/ or a folder"
    )
    parser.add_argument("--out", required=True, help="new (or empty) folder for the merged model")
    add_flags(parser, ExportSettings)
    parser.add_argument(
        "--show-command",
        action="store_true",
        help="only print how to serve --out with vLLM and call it, without merging",
    )
    add_source_flags(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from lab.export import export_run, openai_snippet, vllm_command
    from lab.settings import from_flags

    settings = from_flags(ExportSettings, args)
    if args.show_command:
        print(vllm_command(args.out, settings))
        print()
        print(openai_snippet(Path(args.out).name))
        return 0
    result = export_run(args.adapter, args.out, settings, source=source_options(args))
    what = "Merged the LoRA adapter of" if result.merged else "Saved the fine-tuned model of"
    print(f"{what} {result.run} into {result.out_dir} ({result.seconds:.1f} s): {', '.join(result.files)}")
    if result.hub_url:
        print(f"Uploaded to {result.hub_url}")
    print("\nServe it with vLLM:\n")
    print(vllm_command(result.out_dir, settings))
    print("\nCall it with the openai client:\n")
    print(openai_snippet(result.out_dir.name))
    return 0
