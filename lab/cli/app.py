"""``python -m lab app``: start the web app."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="demo", help="model to load at start: a Hub id, a local folder, 'demo' (the tiny offline model, default) or '' for none")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    parser.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free one)")
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument("--lang", choices=["en", "zh"], default=None, help="interface language (default: the browser's)")
    parser.add_argument("--workspace", default=None, help="folder for datasets, runs and models (default: $LAB_HOME or this checkout)")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("app", help="start the web app", description="Start the VLM Lab web app.")
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lab.ui import launch
    from lab.ui.context import AppSettings

    settings = AppSettings(model=args.model, host=args.host, port=args.port, share=args.share, lang=args.lang, workspace=args.workspace)
    launch(settings)
    return 0
