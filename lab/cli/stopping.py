"""Ctrl-C in a command: the first asks the work to stop and keep what it finished, the second quits at once."""

from __future__ import annotations

import signal
import sys
import threading

from lab.text import Msg


class StopOnCtrlC:
    """While in effect, the first Ctrl-C (or one of ``signals``) sets ``stop`` and prints ``message``; the second
    raises KeyboardInterrupt."""

    def __init__(self, stop: threading.Event, message: Msg, signals: tuple[int, ...] = (signal.SIGINT,)):
        self.stop, self.message, self.signals = stop, message, signals

    def __enter__(self) -> StopOnCtrlC:
        from lab.errors import cli_lang, localize

        def handler(signum, frame):
            if self.stop.is_set():
                raise KeyboardInterrupt
            self.stop.set()
            print(f"\n{localize(self.message, cli_lang())}", file=sys.stderr, flush=True)

        self.previous = {sig: signal.signal(sig, handler) for sig in self.signals}
        return self

    def __exit__(self, *exc) -> None:
        for sig, previous in self.previous.items():
            signal.signal(sig, previous)
