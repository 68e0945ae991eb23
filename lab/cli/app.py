"""``python -m lab app``: start the web app."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="demo",
        help=(
            "model to load at start: a Hub id, a local folder, 'demo' (the tiny offline model, default) or '' for none"
        ),
    )
    parser.add_argument(
        "--host",
        default=None,
        help="address to listen on (default: $GRADIO_SERVER_NAME, else 0.0.0.0 on a Hugging Face Space, "
        "else 127.0.0.1; 0.0.0.0 is every interface)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default: $GRADIO_SERVER_PORT or $PORT, else 7860 or the next free one)",
    )
    parser.add_argument("--share", action="store_true", help="also open a public gradio.live link")
    parser.add_argument(
        "--lang", choices=["en", "zh"], default=None, help="interface language (default: the browser's)"
    )
    parser.add_argument(
        "--workspace", default=None, help="folder for datasets, runs and models (default: $LAB_HOME or this checkout)"
    )
    parser.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="let the model loaded at start run its own Python code (only for authors you trust)",
    )


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("app", help="start the web app", description="Start the VLM Lab web app.")
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lab.ui import launch
    from lab.ui.context import AppSettings

    settings = AppSettings(
        model=args.model,
        host=listen_host(args.host),
        port=listen_port(args.port),
        share=args.share,
        lang=args.lang,
        workspace=args.workspace,
        trust_remote_code=args.trust_remote_code,
    )
    launch(settings)
    return 0


def listen_host(given: str | None) -> str:
    """Where to listen: ``--host``, else ``GRADIO_SERVER_NAME``, else every interface on a Space (its proxy
    connects from outside the container), else this machine only."""
    if given:
        return given
    if os.environ.get("GRADIO_SERVER_NAME"):
        return os.environ["GRADIO_SERVER_NAME"]
    return "0.0.0.0" if os.environ.get("SPACE_ID") else "127.0.0.1"


def listen_port(given: int | None) -> int | None:
    """``--port``, else ``GRADIO_SERVER_PORT`` or ``PORT`` (what a Space or a container platform sets), else None."""
    if given is not None:
        return given
    for name in ("GRADIO_SERVER_PORT", "PORT"):
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return None
