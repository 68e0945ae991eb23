"""Sentences a person sees, in every language: an English template, its values, and catalogs.

English is the key (as in gettext): ``Msg("Run {name} is in use.", name=name)`` is written in
English where it is made, and ``lab/locales/zh.json`` maps each English template to its
Chinese one. ``str(msg)`` is the English (logs, files, tests); ``localize(msg, lang)`` looks
the template up in the catalog of ``lang`` and fills in the values, each value that is itself
a message (a :class:`Msg`, a :class:`~lab.errors.LabError`) in the same language, so a
sentence made of sentences keeps every language::

    >>> hint = Msg("empty answer")
    >>> str(Msg("{path}: {reason}", path="a.png", reason=hint))
    'a.png: empty answer'
    >>> localize(Msg("{path}: {reason}", path="a.png", reason=hint), "zh")
    'a.png：回答为空'

A :class:`Msg` is not a ``str``: ``f"{msg}"`` and ``msg + "..."`` raise ``TypeError``, so a
language can never be dropped on the way by formatting; compose with ``Msg(...)`` instead.
Adding a language is adding one file to ``lab/locales/``.
"""

from __future__ import annotations

import json
import os
from functools import cache

LOCALES = os.path.join(os.path.dirname(__file__), "locales")


def find_langs(folder: str = LOCALES) -> tuple[str, ...]:
    """English, then the language of each catalog in ``folder`` (``zh.json``: zh)."""
    return ("en", *sorted(name[: -len(".json")] for name in os.listdir(folder) if name.endswith(".json")))


LANGS = find_langs()

_NOT_A_STR = (
    "a Msg is not a str, so formatting it would drop its other languages; compose it with "
    "Msg('... {name} ...', name=msg), show it with localize(msg, lang), log it with str(msg)"
)


@cache
def catalog(lang: str) -> dict[str, str]:
    """English template -> template in ``lang`` (read once, on first use)."""
    path = os.path.join(LOCALES, f"{lang}.json")
    if lang == "en" or not os.path.isfile(path):
        return {}
    with open(path, encoding="utf-8") as file:
        return json.load(file)


class Msg:
    """An English template with named values, shown in any language by :meth:`localize`."""

    __slots__ = ("template", "values")

    def __init__(self, template: str, /, **values: object) -> None:
        self.template = template
        self.values = values

    def localize(self, lang: str = "en") -> str:
        """The sentence in ``lang``: the catalog's template (else the English one) with the values."""
        template = self.template if lang == "en" else catalog(lang).get(self.template, self.template)
        if not self.values:
            return template.format() if "{" in template or "}" in template else template
        values = {name: _shown(value, lang) for name, value in self.values.items()}
        try:
            return template.format_map(values)
        except (KeyError, IndexError, ValueError):  # a catalog entry that does not fit: English is still right
            return self.template.format_map(values)

    def __str__(self) -> str:
        return self.localize("en")

    def __repr__(self) -> str:
        values = "".join(f", {name}={value!r}" for name, value in self.values.items())
        return f"Msg({self.template!r}{values})"

    def __format__(self, spec: str) -> str:
        raise TypeError(_NOT_A_STR)

    def __add__(self, other: object):
        raise TypeError(_NOT_A_STR)

    __radd__ = __add__

    def __bool__(self) -> bool:
        return bool(self.template)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Msg):
            return NotImplemented
        return self.template == other.template and self.values == other.values

    def __hash__(self) -> int:
        try:
            return hash((self.template, tuple(self.values.items())))
        except TypeError:  # a value that is a list, say
            return hash(self.template)

    def __reduce__(self):
        return (_restore, (self.template, self.values))

    def to_dict(self) -> dict:
        """A JSON-ready form (``{"template": ..., "values": {...}}``) for saving with the English text."""
        return {"template": self.template, "values": {name: _saved(value) for name, value in self.values.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> Msg:
        """The message :meth:`to_dict` saved."""
        values = {name: cls.from_dict(v) if _is_saved_msg(v) else v for name, v in (data.get("values") or {}).items()}
        return cls(str(data.get("template", "")), **values)


def _restore(template: str, values: dict) -> Msg:
    return Msg(template, **values)  # dynamic template: a message unpickled


def _message_of(value: object) -> Msg | None:
    if isinstance(value, Msg):
        return value
    inner = getattr(value, "msg", None)  # a LabError carries its sentence as .msg
    return inner if isinstance(inner, Msg) else None


def _shown(value: object, lang: str) -> object:
    message = _message_of(value)
    return value if message is None else message.localize(lang)


def _saved(value: object) -> object:
    message = _message_of(value)
    if message is not None:
        return message.to_dict()
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _is_saved_msg(value: object) -> bool:
    return isinstance(value, dict) and set(value) == {"template", "values"}


def localize(message: object, lang: str = "en") -> str:
    """``message`` (a :class:`Msg`, a :class:`~lab.errors.LabError`, or plain text) in ``lang``."""
    found = _message_of(message)
    return str(message) if found is None else found.localize(lang)


def msg_of(thing: object) -> Msg | str:
    """What ``thing`` says, kept after it is gone: an error's :class:`Msg`, a Msg as is, else its text."""
    found = _message_of(thing)
    return str(thing) if found is None else found


def join(separator: Msg | str, items) -> Msg:
    """``items`` (messages or text) one after another with ``separator`` between, in each language:
    ``join(Msg("; "), parts)`` gives "a; b" in English and "a；b" in Chinese."""
    items = list(items)
    names = [f"i{n}" for n in range(len(items))]
    template = "{separator}".join("{" + name + "}" for name in names)
    return Msg(template, separator=separator, **dict(zip(names, items)))  # dynamic template: only placeholders


def saved_fields(name: str, message: object) -> dict:
    """``message`` as fields of a saved record: ``name`` (the English, for people) and ``<name>_msg``."""
    found = _message_of(message)
    if found is None:
        return {name: None if message is None else str(message)}
    return {name: str(found), f"{name}_msg": found.to_dict()}


def read_saved(record: dict, name: str) -> Msg | str:
    """The message :func:`saved_fields` wrote; a record without ``<name>_msg`` (older files) gives its text."""
    saved = record.get(f"{name}_msg")
    if _is_saved_msg(saved):
        return Msg.from_dict(saved)
    return str(record.get(name) or "")
