"""Settings declared once: a dataclass field carries its label, help, bounds and choices.

Every group of settings (:class:`~lab.train_config.TrainConfig`, the labeler's, evaluation's,
chat's, export's) is a dataclass whose fields are made with :func:`setting`. The UI form
(``lab/ui/forms.py``), the CLI flags (:func:`add_flags`) and the check (:func:`check`) are
all made from those fields, so a new option is one field and its docstring::

    @dataclass
    class ChatSettings:
        top_p: float = setting(0.9, label="Top-p", above=0, max=1, widget="slider", ui_min=0.05)
        \"\"\"Sample only from the smallest set of tokens whose probabilities add up to this.\"\"\"

        def __post_init__(self):
            check(self)   # types coerced, then bounds and choices: ConfigError("{name} must be ...", ...)

A label is English, the key of its translations in ``lab/locales/`` (the form shows it with
``t(label)``); ``context`` tells apart one English label with two translations (gettext's msgctxt),
and ``choice_labels`` are the choices' words as :class:`~lab.text.Msg`.
The docstring under a field is its help (``--help`` of the CLI), read from the source once.
Bounds are ``min``/``max`` (inclusive) and ``above``/``below`` (exclusive); ``choices`` are
enforced (each item, for a list), ``options`` are only offered by the form. A ``secret``
(an API key) is left out of :func:`public_dict`, of ``repr`` and of the CLI flags.
``old_names`` are names a field had before, still read back from saved files.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import textwrap
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

from lab.config_values import coerce_value
from lab.errors import ConfigError
from lab.text import Msg, join
from lab.yaml_files import check_keys, closest

_KEY = "lab.setting"


@dataclass(frozen=True)
class Setting:
    """One field of a settings class, as the form, the flags and the check see it."""

    label: str  # English; its Chinese is in the catalog
    help: str = ""
    min: float | None = None
    max: float | None = None
    above: float | None = None
    below: float | None = None
    choices: tuple | None = None
    choice_labels: dict = field(default_factory=dict)  # value -> Msg
    options: tuple | None = None
    widget: str | None = None  # checkbox, number, text, textarea, password, slider, dropdown, checkboxes, path, paths
    step: float | None = None
    ui_min: float | None = None
    ui_max: float | None = None
    secret: bool = False
    cli: bool = True
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    old_names: tuple[str, ...] = ()
    context: str | None = None  # for a label whose English has another translation elsewhere
    # Filled in by settings_of():
    name: str = ""
    type: str = ""
    default: Any = None

    @property
    def base_type(self) -> str:
        """The type without ``| None``: str, int, float, bool or list[str]."""
        return self.type.replace("| None", "").strip()

    @property
    def optional(self) -> bool:
        return "None" in self.type

    @property
    def has_flag(self) -> bool:
        return self.cli and not self.secret

    def flag_names(self) -> tuple[str, ...]:
        return self.flags or ("--" + self.name.replace("_", "-"),)


def setting(default=MISSING, *, label: str, secret: bool = False, **declared) -> Any:
    """A dataclass field whose metadata describes it (see :class:`Setting` for the keywords).

    A list default is copied for each instance. ``label`` is the English label; its Chinese goes
    into ``lab/locales/zh.json``.
    """
    if not isinstance(label, str):
        raise TypeError("setting(label=...) takes the English label only; its Chinese goes into lab/locales/zh.json")
    meta = Setting(
        label=label, secret=secret, **{k: tuple(v) if isinstance(v, list) else v for k, v in declared.items()}
    )
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata={_KEY: meta}, repr=not secret)
    return field(default=default, metadata={_KEY: meta}, repr=not secret)


@functools.cache
def settings_of(cls: type) -> tuple[Setting, ...]:
    """The settings of dataclass ``cls`` in declaration order (a field made without :func:`setting` has no label)."""
    docs = _docstrings(cls)
    found = []
    for f in fields(cls):
        meta = f.metadata.get(_KEY) or Setting(label="")
        default = (
            f.default
            if f.default is not MISSING
            else (f.default_factory() if f.default_factory is not MISSING else MISSING)
        )
        found.append(
            replace(meta, name=f.name, type=_type_name(f.type), default=default, help=meta.help or docs.get(f.name, ""))
        )
    return tuple(found)


def setting_of(cls: type, name: str) -> Setting:
    return next(s for s in settings_of(cls) if s.name == name)


def _type_name(type_) -> str:
    return type_ if isinstance(type_, str) else getattr(type_, "__name__", str(type_))


def _docstrings(cls: type) -> dict[str, str]:
    """``{field: docstring}`` from the string right under each annotated field in the class's source."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs = {}
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr)
            and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def defaults(cls: type) -> dict:
    """Every field's default (a fresh copy of a list); a field without one is left out."""
    return {s.name: _copy(s.default) for s in settings_of(cls) if s.default is not MISSING}


def values(obj) -> dict:
    """Every field of settings ``obj`` and its value, in declaration order."""
    return {s.name: _copy(getattr(obj, s.name)) for s in settings_of(type(obj))}


def public_dict(obj) -> dict:
    """Every field except the secrets (API keys): safe to save or show."""
    return {s.name: _copy(getattr(obj, s.name)) for s in settings_of(type(obj)) if not s.secret}


def _copy(value):
    return list(value) if isinstance(value, list) else value


# ---------------------------------------------------------------- the check


def check(obj) -> None:
    """Coerce every field of ``obj`` to its declared type, then refuse a value out of bounds or choices.

    Each refusal is a :class:`ConfigError` of one sentence that names the field.
    """
    for s in settings_of(type(obj)):
        value = coerce_value(s.name, getattr(obj, s.name), s.type)
        setattr(obj, s.name, value)
        if value is None:
            continue
        if s.choices is not None:
            _check_choice(s, value)
        elif s.base_type in ("int", "float") or type(value) in (int, float):  # a number where "auto" may be too
            _check_bounds(s, value)


def _check_choice(s: Setting, value) -> None:
    shown = ", ".join("null" if c is None else str(c) for c in s.choices)
    if not isinstance(value, list):
        if value not in s.choices:
            raise ConfigError("{name} must be one of {shown}, not '{value}'.", name=s.name, shown=shown, value=value)
        return
    for item in value:
        if item not in s.choices:
            hint = closest(item, s.choices)
            raise ConfigError(
                "{name} has '{item}'{hint}; the choices are {shown}.", name=s.name, item=item, hint=hint, shown=shown
            )


def _check_bounds(s: Setting, value) -> None:
    low = (s.min is None or value >= s.min) and (s.above is None or value > s.above)
    high = (s.max is None or value <= s.max) and (s.below is None or value < s.below)
    if low and high:
        return
    bounds = [
        Msg("at least {bound:g}", bound=s.min) if s.min is not None else None,
        Msg("greater than {bound:g}", bound=s.above) if s.above is not None else None,
        Msg("at most {bound:g}", bound=s.max) if s.max is not None else None,
        Msg("below {bound:g}", bound=s.below) if s.below is not None else None,
    ]
    bounds = [bound for bound in bounds if bound is not None]
    if s.min is not None and len(bounds) == 1:
        if s.min == 0:
            raise ConfigError("{name} cannot be negative, not {value}.", name=s.name, value=value)
        raise ConfigError("{name} must be at least {min:g}, not {value}.", name=s.name, min=s.min, value=value)
    raise ConfigError(
        "{name} must be {bounds}, not {value}.", name=s.name, bounds=join(Msg(" and "), bounds), value=value
    )


# ---------------------------------------------------------------- building from names and values


def renamed(cls: type, data: Mapping) -> dict:
    """``data`` with each field's old names (from files saved before a rename) replaced by the field's name."""
    old = {alias: s.name for s in settings_of(cls) for alias in s.old_names}
    out = {}
    for key, value in data.items():
        if key in old and old[key] in data:
            continue  # the new name was saved too: it wins
        out[old.get(key, key)] = value
    return out


def build(cls: type, data: Mapping, *, base=None, where: str | Msg | None = None):
    """An instance of ``cls`` from ``{name: value}`` over ``base`` (an instance or a mapping; else the defaults).

    Values are coerced and checked by the class; an unknown name is a :class:`ConfigError` that
    suggests the closest field (old names of renamed fields are accepted).
    """
    data = renamed(cls, data)
    check_keys(data, [s.name for s in settings_of(cls)], where or cls.__name__)
    start = defaults(cls) if base is None else (dict(base) if isinstance(base, Mapping) else values(base))
    return cls(**{**renamed(cls, start), **data})


# ---------------------------------------------------------------- command-line flags


def add_flags(parser: argparse.ArgumentParser, cls: type, *, exclude=(), title: str | None = None) -> None:
    """A ``--field-name`` flag for each setting of ``cls`` (not the secrets, nor those marked ``cli=False``).

    Flags have their field's type and choices, and show its default in the help; a flag not
    given stays out of the parsed namespace, so :func:`from_flags` can lay the given ones over
    saved settings. ``exclude`` skips fields another class has already given a flag.
    """
    target = parser.add_argument_group(title) if title else parser
    for s in settings_of(cls):
        if not s.has_flag or s.name in exclude:
            continue
        options = dict(dest=s.name, default=argparse.SUPPRESS, help=_flag_help(s))
        if s.base_type == "bool":
            options["action"] = argparse.BooleanOptionalAction
        else:
            options.update(type=_flag_type(s), metavar=s.metavar or _metavar(s))
            if s.choices is not None and s.base_type != "list[str]":
                options["choices"] = s.choices
        target.add_argument(*s.flag_names(), **options)


def _flag_help(s: Setting) -> str:
    text = " ".join(s.help.replace("``", "").split()).replace("%", "%%")
    shown = _shown_default(s.default)
    return f"{text.removesuffix('.')} (default: {shown})." if shown else text


def _shown_default(value) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None or value == "" or value is MISSING:
        return ""
    return (
        ", ".join(map(str, value))
        if isinstance(value, list)
        else f"{value:g}"
        if isinstance(value, float)
        else str(value)
    )


def _metavar(s: Setting) -> str:
    if s.choices is not None:
        return "{" + ",".join("none" if c is None else str(c) for c in s.choices) + "}"
    return {"int": "N", "float": "X", "list[str]": "A,B"}.get(s.base_type, "TEXT")


def _flag_type(s: Setting):
    """The flag's value converter: argparse names it in its error (``invalid int value``)."""
    base = {"int": int, "float": float}.get(s.base_type, str)
    if s.base_type in ("int | str", "bool | str"):  # a number or a switch, or "auto"
        return _auto_flag_type(s)

    def convert(text: str):
        if s.optional and text.strip().lower() in ("none", "null"):
            return None
        return base(text)

    convert.__name__ = base.__name__
    return convert


def _auto_flag_type(s: Setting):
    def convert(text: str):
        try:
            return coerce_value(s.name, text, s.type)
        except ConfigError as err:
            raise ValueError(str(err)) from None

    convert.__name__ = "auto" if s.base_type == "int | str" else "true/false/auto"
    return convert


def flag_values(cls: type, args: argparse.Namespace) -> dict:
    """``{field: value}`` of the flags of ``cls``'s settings that were given on the command line."""
    given = vars(args)
    return {s.name: given[s.name] for s in settings_of(cls) if s.has_flag and s.name in given}


def from_flags(cls: type, args: argparse.Namespace, base=None, **fixed):
    """An instance of ``cls``: ``base`` (or the defaults), then the flags given, then ``fixed`` values."""
    return build(cls, {**flag_values(cls, args), **fixed}, base=base)
