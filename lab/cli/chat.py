"""``python -m lab chat``: ask the model one question about one or more images."""

from __future__ import annotations

import argparse
import sys

from lab.cli.eval import add_model_arguments


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat", help="ask a model (or a run's adapter) about images, one shot",
        description="Load a model (optionally with a run's LoRA adapter), send it images and a prompt, print the answer as it streams.",
    )
    add_model_arguments(parser)
    parser.add_argument("--image", action="append", default=[], metavar="IMG", help="an image file (repeat for several)")
    parser.add_argument("--prompt", required=True, help="the question or instruction")
    parser.add_argument("--system", default="", help="system prompt (default: the chat template's)")
    parser.add_argument("--temperature", type=float, default=0.0, help="0 (default) is greedy; higher is more varied")
    parser.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling threshold (default: 0.9)")
    parser.add_argument("--max-new-tokens", type=int, default=512, help="longest answer in tokens (default: 512)")
    parser.add_argument("--no-adapter", action="store_true", help="answer with the run's adapter turned off (the base model)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lab.chat import ChatSettings, stream_reply, user_turn
    from lab.handle import ModelHandle
    from lab.images import open_image

    for path in args.image:
        open_image(path)  # a bad image fails before the model loads
    settings = ChatSettings(system=args.system, temperature=args.temperature, top_p=args.top_p,
                            max_new_tokens=args.max_new_tokens)  # fmt: skip
    history = [user_turn(args.prompt, args.image)]
    handle = ModelHandle()
    handle.load_model_or_run(args.model, args.adapter, quantization=args.quantization, device=args.device)
    shown = ""
    for text in stream_reply(handle, history, settings, adapter=False if args.no_adapter else None):
        sys.stdout.write(text[len(shown):])
        sys.stdout.flush()
        shown = text
    print()
    return 0
