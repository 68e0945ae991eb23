"""``python -m lab COMMAND``: each command is a thin shell over one core function.

A command lives in its own module here with ``add_parser(subparsers)``, which adds
the command's parser and sets ``func`` to the function that runs it. Command modules
import heavy libraries (torch, transformers, gradio) inside ``func``, so ``--help``
stays instant. Errors a person can cause (:class:`lab.errors.LabError`) are printed
as one sentence and exit with status 2; nothing else is caught.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

# In the order of the work.
COMMAND_MODULES = [
    "lab.cli.app",
    "lab.cli.tiny_model",
    "lab.cli.label",
    "lab.cli.data",
    "lab.cli.train",
    "lab.cli.eval",
    "lab.cli.chat",
    "lab.cli.export",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab",
        description="VLM Lab: label images, fine-tune a vision-language model, evaluate it and chat with it.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        import_module(module).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from lab.errors import LabError, cli_lang, localize

    try:
        return int(args.func(args) or 0)
    except LabError as err:
        lang = cli_lang()
        print(f"{'错误' if lang == 'zh' else 'error'}: {localize(err, lang)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
