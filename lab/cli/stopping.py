"""Ctrl-C in a command: the first asks the work to stop and keep what it finished, the second quits at once."""

from __future__ import annotations

import signal
import sys
import threading

from lab.text import Msg


class StopOnCtrlC:
    """While in effect, the first Ctrl-C sets ``stop`` and prints ``message``; the second raises KeyboardInterrupt."""

    def __init__(self, stop: threading.Event, message: Msg):
        self.stop, self.message = stop, message

    def __enter__(self) -> "StopOnCtrlC":
        from lab.errors import cli_lang, localize

        self.previous = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if self.stop.is_set():
                raise KeyboardInterrupt
            self.stop.set()
            print(f"\n{localize(self.message, cli_lang())}", file=sys.stderr)

        signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc) -> None:
        signal.signal(signal.SIGINT, self.previous)
