"""``python -m lab chat``: ask the model one question about one or more images."""

from __future__ import annotations

import argparse
import sys

from lab.chat import ChatSettings
from lab.cli.eval import add_model_arguments, source_options
from lab.settings import add_flags


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat", help="ask a model (or a run's adapter) about images, one shot",
        description="Load a model (optionally with a run's LoRA adapter), send it images and a prompt, print the answer as it streams.",
    )
    add_model_arguments(parser)
    parser.add_argument("--image", action="append", default=[], metavar="IMG", help="an image file (repeat for several)")
    parser.add_argument("--prompt", required=True, help="the question or instruction")
    add_flags(parser, ChatSettings)
    parser.add_argument("--no-adapter", action="store_true", help="answer with the run's adapter turned off (the base model)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lab.chat import stream_reply, user_turn
    from lab.handle import ModelHandle
    from lab.images import open_image
    from lab.settings import from_flags

    for path in args.image:
        open_image(path)  # a bad image fails before the model loads
    settings = from_flags(ChatSettings, args)
    history = [user_turn(args.prompt, args.image)]
    handle = ModelHandle()
    handle.load_model_or_run(args.model, args.adapter, quantization=args.quantization, device=args.device,
                             **source_options(args))
    shown = ""
    for text in stream_reply(handle, history, settings, adapter=False if args.no_adapter else None):
        sys.stdout.write(text[len(shown):])
        sys.stdout.flush()
        shown = text
    print()
    return 0
