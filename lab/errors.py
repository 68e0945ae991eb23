"""Errors a person can cause, each one sentence in every language.

Every error carries a single sentence meant for the person, shown as is by the UI and the
CLI (never a traceback). Code that catches a library exception and knows what it means
for the user re-raises it as one of these.

The sentence is a :class:`~lab.text.Msg`, written in English where it is raised:
``ConfigError("Unknown key '{key}' in {path}.", key=key, path=path)``; ``lab/locales/zh.json``
holds its Chinese. ``str(err)`` is the English sentence (logs, files, tests);
:func:`localize` gives the one for a language.
"""

from __future__ import annotations

import os

from lab.text import LANGS, Msg, localize, msg_of  # noqa: F401  (localize and msg_of are used through here too)


def cli_lang() -> str:
    """The language of command-line messages: ``LAB_LANG``, else the locale (zh_CN... gives zh)."""
    chosen = os.environ.get("LAB_LANG", "").strip().lower()
    if chosen in LANGS:
        return chosen
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        if value:
            lang = value.lower().split(".")[0].split("_")[0].split("-")[0]
            return lang if lang in LANGS else "en"
    return "en"


class LabError(Exception):
    """A problem the user can fix: ``err.msg`` is its sentence (a :class:`Msg`), ``str(err)`` the English."""

    def __init__(self, message: str | Msg, /, **values: object):
        if "zh" in values and not isinstance(message, Msg) and "{zh}" not in message:
            raise TypeError(
                "LabError takes no zh=: write the sentence in English with named values and put "
                "its Chinese into lab/locales/zh.json"
            )
        self.msg = message if isinstance(message, Msg) else Msg(message, **values)  # dynamic template: the caller's
        super().__init__(self.msg)

    def __str__(self) -> str:
        return str(self.msg)

    def __reduce__(self):
        return (_rebuild, (type(self), self.msg, dict(self.__dict__)))


def _rebuild(cls, msg, state):
    # Errors cross process boundaries (training workers); the sentence keeps its values on the way.
    err = LabError.__new__(cls)
    LabError.__init__(err, msg)
    err.__dict__.update(state)
    return err


class ConfigError(LabError):
    """A configuration that contradicts itself or names something that does not exist."""


class ModelLoadError(LabError):
    """A model that cannot be loaded (unreachable offline, not a model folder, ...)."""


class DatasetError(LabError):
    """A dataset folder or file that cannot be read."""


class BadImageError(LabError):
    """An image that cannot be used; the message names the file and the reason (a :class:`Msg`)."""

    def __init__(self, path, reason: Msg):
        self.path = str(path)
        self.reason = reason
        super().__init__(Msg("{path}: {reason}", path=self.path, reason=reason))


class BusyError(LabError):
    """The shared model is busy with another job (training, generation)."""
