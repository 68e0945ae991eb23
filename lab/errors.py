"""Errors a person can cause, and sentences in two languages.

Every error carries a single sentence meant for the person, shown as is by the UI and the
CLI (never a traceback). Code that catches a library exception and knows what it means
for the user re-raises it as one of these.

Pages are English or Chinese, so each sentence is written in both where it is raised:
``ConfigError(f"... {x}", zh=f"... {x}")``. ``str(err)`` is the English sentence (logs,
files, tests); :func:`localize` gives the one for a language. Messages that are not
errors (a job's status line, a dataset check's faults) use :class:`Text`, an English
``str`` that carries its Chinese form along.
"""

from __future__ import annotations

import os

LANGS = ("en", "zh")


class Text(str):
    """An English sentence that carries its Chinese form as ``.zh``; otherwise a plain str."""

    zh: str

    def __new__(cls, en: str, zh: str | None = None):
        obj = super().__new__(cls, en)
        obj.zh = zh or en
        return obj

    def __reduce__(self):
        return (Text, (str(self), self.zh))

    @classmethod
    def of(cls, message: object) -> "Text":
        """``message`` (an error, say) in both languages, kept after the error itself is gone."""
        return cls(str(message), localize(message, "zh"))


def localize(message: object, lang: str = "en") -> str:
    """``message`` (a :class:`Text`, a :class:`LabError` or anything else) in ``lang``."""
    if lang == "zh":
        zh = getattr(message, "zh", None)
        if zh:
            return str(zh)
    return str(message)


def cli_lang() -> str:
    """The language of command-line messages: ``LAB_LANG``, else the locale (zh_CN... gives zh)."""
    chosen = os.environ.get("LAB_LANG", "").strip().lower()
    if chosen in LANGS:
        return chosen
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name, "")
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    return "en"


class LabError(Exception):
    """A problem the user can fix; ``str(err)`` is one clear sentence, ``err.zh`` its Chinese form."""

    def __init__(self, message: str, zh: str | None = None):
        super().__init__(message)
        self.zh = zh

    def __reduce__(self):
        return (_rebuild, (type(self), str(self), self.zh, dict(self.__dict__)))


def _rebuild(cls, message, zh, state):
    # Errors cross process boundaries (training workers); keep both languages on the way.
    err = LabError.__new__(cls)
    LabError.__init__(err, message, zh)
    err.__dict__.update(state)
    return err


class ConfigError(LabError):
    """A configuration that contradicts itself or names something that does not exist."""


class ModelLoadError(LabError):
    """A model that cannot be loaded (unreachable offline, not a model folder, ...)."""


class DatasetError(LabError):
    """A dataset folder or file that cannot be read."""


class BadImageError(LabError):
    """An image that cannot be used; the message names the file and the reason."""

    def __init__(self, path, reason: str, reason_zh: str | None = None):
        self.path = str(path)
        self.reason = reason
        self.reason_zh = reason_zh or reason
        super().__init__(f"{self.path}: {reason}", zh=f"{self.path}：{reason_zh}" if reason_zh else None)


class BusyError(LabError):
    """The shared model is busy with another job (training, generation)."""
