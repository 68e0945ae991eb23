"""``python -m lab chat``: talk to a model (or a run's adapter) about images, as the Chat tab does.

With ``--prompt`` it answers one message and exits; without, it is a conversation on the
terminal: type a message and press Enter; ``/image PATH`` adds a picture to the next
message, ``/adapter on|off`` answers with the run's adapter or the base model, ``/compare
on|off`` answers twice (adapter off, then on), ``/reset`` starts over, ``/quit`` (or
Ctrl-D) ends. ``--history FILE`` continues the conversation saved in FILE and saves it back
after each answer (a JSON list of turns ``{"role", "text", "images"}``; with ``--compare``
``{"base": [...], "tuned": [...]}``, one conversation per side), so a script can hold a
multi-turn conversation one command at a time::

    python -m lab chat --adapter classroom --history talk.json --image a.png --prompt "What is it?"
    python -m lab chat --adapter classroom --history talk.json --prompt "And its colour?"
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from lab.chat import ChatSettings
from lab.cli.eval import add_model_arguments, source_options
from lab.settings import add_flags
from lab.text import Msg


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "chat",
        help="talk to a model (or a run's adapter) about images: one message, or a conversation",
        description="Load a model (optionally with a run's LoRA adapter) and answer about images, streamed. With "
        "--prompt: one message. Without: a conversation on the terminal (/image PATH, /adapter on|off, "
        "/compare on|off, /reset, /quit). --history FILE keeps a conversation between commands.",
    )
    add_model_arguments(parser)
    parser.add_argument(
        "--image", action="append", default=[], metavar="IMG", help="an image file (repeat for several)"
    )
    parser.add_argument("--prompt", default=None, help="the message; without it, talk on the terminal")
    parser.add_argument(
        "--history",
        default=None,
        metavar="FILE",
        help="a JSON conversation to continue; the answer is added and the file saved",
    )
    add_flags(parser, ChatSettings)
    parser.add_argument(
        "--no-adapter", action="store_true", help="answer with the run's adapter turned off (the base model)"
    )
    parser.add_argument(
        "--compare", action="store_true", help="answer twice: the base model (adapter off), then the tuned"
    )
    parser.set_defaults(func=run)


class Conversation:
    """The turns so far (one list per side when comparing), read from and saved to ``--history``."""

    def __init__(self, path: str | None, compare: bool):
        self.path, self.compare = Path(path).expanduser() if path else None, compare
        self.tuned: list[dict] = []
        self.base: list[dict] = []
        if self.path is not None and self.path.is_file():
            self._read()

    def _read(self) -> None:
        from lab.errors import ConfigError

        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ConfigError(
                "Cannot read the conversation in {path} ({err_type}).", path=self.path, err_type=type(err).__name__
            ) from None
        if isinstance(data, dict):
            self.tuned, self.base = list(data.get("tuned") or []), list(data.get("base") or [])
        else:
            self.tuned, self.base = list(data), list(data)
        turns = self.tuned + self.base
        if not all(isinstance(t, dict) and t.get("role") in ("user", "assistant") for t in turns):
            raise ConfigError(
                "{path} is not a conversation: a JSON list of turns with role, text and images.", path=self.path
            )

    def save(self) -> None:
        if self.path is None:
            return
        data = {"base": self.base, "tuned": self.tuned} if self.compare else self.tuned
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    def reset(self) -> None:
        self.tuned, self.base = [], []
        self.save()


def _say(handle, conversation: Conversation, text: str, images: list[str], settings, adapter) -> None:
    """Answer one message, streamed to stdout, and add it (and the answer) to the conversation."""
    from lab.chat import assistant_turn, stream_compare, stream_reply, user_turn
    from lab.images import open_image

    for path in images:
        open_image(path)  # a bad image is one sentence, before the model works
    turn = user_turn(text, [str(Path(p).expanduser().resolve()) for p in images])
    if conversation.compare:
        base, tuned = conversation.base + [turn], conversation.tuned + [turn]
        off, on = _stream_pair(stream_compare(handle, base, tuned, settings))
        conversation.base, conversation.tuned = base + [assistant_turn(off)], tuned + [assistant_turn(on)]
    else:
        tuned, shown = conversation.tuned + [turn], ""
        for shown in _streamed(stream_reply(handle, tuned, settings, adapter=adapter)):  # noqa: B007  (keeps the last)
            pass
        conversation.tuned = tuned + [assistant_turn(shown)]
    conversation.save()


def _streamed(texts):
    """Print each growing text's new part as it comes; yields the texts."""
    shown = ""
    for text in texts:
        sys.stdout.write(text[len(shown) :])
        sys.stdout.flush()
        shown = text
        yield text
    print()


def _stream_pair(pairs) -> tuple[str, str]:
    """Print the base answer, then the tuned one, as they grow."""
    off = on = ""
    shown_off = shown_on = 0
    sys.stdout.write("[base] ")
    for off, on in pairs:
        if on and not shown_on:
            sys.stdout.write(off[shown_off:] + "\n[tuned] ")
            shown_off = len(off)
        sys.stdout.write(on[shown_on:] if on else off[shown_off:])
        shown_on, shown_off = (len(on), shown_off) if on else (shown_on, len(off))
        sys.stdout.flush()
    print("" if shown_on else "\n[tuned] ")
    return off, on


def run(args: argparse.Namespace) -> int:
    from lab.handle import ModelHandle
    from lab.images import open_image
    from lab.settings import from_flags

    for path in args.image:
        open_image(path)  # a bad image fails before the model loads
    settings = from_flags(ChatSettings, args)
    conversation = Conversation(args.history, args.compare)
    handle = ModelHandle()
    handle.load_model_or_run(
        args.model, args.adapter, quantization=args.quantization, device=args.device, **source_options(args)
    )
    adapter = False if args.no_adapter else None
    if args.prompt is not None:
        _say(handle, conversation, args.prompt, args.image, settings, adapter)
        return 0
    return talk(handle, conversation, settings, adapter, list(args.image))


def talk(handle, conversation: Conversation, settings, adapter, images: list[str]) -> int:
    """The conversation on the terminal, line by line, until /quit or the end of the input."""
    from lab.errors import LabError, cli_lang, localize

    lang = cli_lang()
    print(
        localize(
            Msg(
                "Type a message and press Enter; /image PATH adds a picture to the next message, "
                "/adapter on|off, /compare on|off, /reset, /quit."
            ),
            lang,
        ),
        file=sys.stderr,
    )
    while (line := _read_line()) is not None:
        if not line.strip():
            continue
        if line.startswith("/"):
            command, _, rest = line[1:].partition(" ")
            if command in ("quit", "exit", "q"):
                break
            try:
                adapter = _command(command, rest.strip(), conversation, adapter, images, lang)
            except LabError as err:
                print(localize(err, lang), file=sys.stderr)
            continue
        try:
            _say(handle, conversation, line, images, settings, adapter)
            images = []
        except LabError as err:  # a busy model, a bad picture: the message and the pictures stay for a retry
            print(localize(err, lang), file=sys.stderr)
        except KeyboardInterrupt:  # Ctrl-C stops the answer, not the conversation
            print(localize(Msg("(stopped; that answer is not kept)"), lang), file=sys.stderr)
    return 0


def _read_line() -> str | None:
    """The next line typed, or None at the end of the input (Ctrl-D) or on Ctrl-C at the prompt."""
    try:
        return input("> " if sys.stdin.isatty() else "")
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        return None


def _command(command: str, rest: str, conversation: Conversation, adapter, images: list[str], lang: str):
    """Carry out one /command; returns the adapter choice after it."""
    from lab.errors import ConfigError, localize
    from lab.images import open_image

    if command == "image":
        open_image(rest)
        images.append(rest)
        print(localize(Msg("{n} image(s) go with the next message.", n=len(images)), lang), file=sys.stderr)
    elif command == "reset":
        conversation.reset()
        images.clear()
        print(localize(Msg("A new conversation."), lang), file=sys.stderr)
    elif command in ("adapter", "compare") and rest in ("on", "off"):
        if command == "compare":
            conversation.compare = rest == "on"
            conversation.base = list(conversation.tuned)
            return adapter
        return rest == "on"
    else:
        raise ConfigError(
            "Unknown command /{command}; use /image PATH, /adapter on|off, /compare on|off, /reset or /quit.",
            command=f"{command} {rest}".strip(),
        )
    return adapter
