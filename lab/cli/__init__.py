"""``python -m lab COMMAND``: each command is a thin shell over one core function.

A command lives in its own module here with ``add_parser(subparsers)``, which adds
the command's parser and sets ``func`` to the function that runs it. Command modules
import heavy libraries (torch, transformers, gradio) inside ``func``, so ``--help``
stays instant. Errors a person can cause (:class:`lab.errors.LabError`) are printed
as one sentence and exit with status 2. Anything else is a bug: one sentence too, exit
status 1, and its traceback goes to the workspace's ``logs/cli.log`` (and to the terminal
with ``--verbose`` or ``LAB_DEBUG=1``). A command that got nothing done (no image labeled,
no usable answer) exits with status 1 and says why.
"""

from __future__ import annotations

import argparse
import sys
from importlib import import_module

# In the order of the work.
COMMAND_MODULES = [
    "lab.cli.app",
    "lab.cli.tiny_model",
    "lab.cli.prompt",
    "lab.cli.label",
    "lab.cli.review",
    "lab.cli.data",
    "lab.cli.train",
    "lab.cli.runs",
    "lab.cli.eval",
    "lab.cli.chat",
    "lab.cli.export",
]
LOG_FILE = "logs/cli.log"  # under the workspace


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m lab",
        description="VLM Lab: label images, fine-tune a vision-language model, evaluate it and chat with it.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMAND_MODULES:
        import_module(module).add_parser(subparsers)
    _add_verbose(parser)
    return parser


def _add_verbose(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` on every command and sub-command, so it may come anywhere on the line."""
    parser.add_argument(
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the traceback of an unexpected error (also: LAB_DEBUG=1)",
    )
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                _add_verbose(sub)


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
    except Exception as err:  # a bug: one sentence here, the traceback in the log
        _report_bug(args, err)
        return 1


def _report_bug(args: argparse.Namespace, err: Exception) -> None:
    import os
    import time
    import traceback

    from lab import paths
    from lab.errors import cli_lang, localize
    from lab.jobs import unexpected_failure
    from lab.text import Msg

    lang, details = cli_lang(), traceback.format_exc()
    what = f"python -m lab {args.command}"  # the same in every language
    where: object = Msg("run again with --verbose to see them")
    try:
        log = paths.workspace() / LOG_FILE
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as file:
            file.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} python -m lab {' '.join(sys.argv[1:])}\n{details}")
        where = log
    except OSError:
        pass
    sentence = Msg("{failure}; details in {where}.", failure=unexpected_failure(what, err), where=where)
    print(f"{'错误' if lang == 'zh' else 'error'}: {localize(sentence, lang)}", file=sys.stderr)
    if getattr(args, "verbose", False) or os.environ.get("LAB_DEBUG", "").strip() not in ("", "0"):
        print(details, file=sys.stderr, end="")
