"""A setting's value as text and back: ``key=value`` overrides, YAML and form values.

The CLI's ``--set`` and a preset's YAML give values as text or loosely typed YAML; a
form gives strings and numbers. :func:`coerce_value` turns any of them into the type
a config field declares, :func:`apply_overrides` reads ``key=value`` strings and
:func:`format_override` writes a value back so that the round trip is exact::

    apply_overrides({}, ["lora_rank=16", "lora_targets=[language,vision]"], TrainConfig)
    # -> {'lora_rank': 16, 'lora_targets': ['language', 'vision']}
    format_override(["language", "vision"])   # -> '[language, vision]'

Field types are read from a dataclass whose annotations are strings
(``from __future__ import annotations``), such as :class:`lab.train_config.TrainConfig`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import fields

import yaml

from lab.errors import ConfigError
from lab.yaml_files import closest

_WORD = re.compile(r"^[^\W\d][\w.-]*$")


def apply_overrides(data: dict, overrides, config: type) -> dict:
    """``data`` updated with ``key=value`` strings naming fields of the dataclass ``config``.

    Values are read as YAML, so ``lora_rank=16`` is a number; an unknown key is a
    :class:`ConfigError` with the closest field name.
    """
    out = dict(data)
    types = {f.name: str(f.type) for f in fields(config)}
    for item in overrides:
        key, sep, raw = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("override '{item}' is not of the form key=value.", item=item)
        if key not in types:
            hint = closest(key, list(types))
            raise ConfigError("unknown setting '{key}' in override '{item}'{hint}.", key=key, item=item, hint=hint)
        out[key] = _read_override(key, raw.strip(), types[key])
    return out


def _read_override(key: str, text: str, type_: str):
    if text in ("", "~", "null"):
        return None
    # Free text is taken as typed ("system=Note: be brief #1" is a sentence, not YAML);
    # quotes are there for text with leading spaces or line breaks.
    if type_.startswith("str") and text[0] not in "'\"" and not (text[0] == "[" and "list" in type_):
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        if type_.startswith("str"):
            return text
        raise ConfigError("cannot read the value of {key} in '{key}={text}'.", key=key, text=text) from None


def format_override(value) -> str:
    """``value`` as the right-hand side of ``key=value`` that :func:`apply_overrides` reads back unchanged."""
    if value is None:
        return "null"
    if isinstance(value, str):
        plain = value and value.strip() == value and "\n" not in value and value[0] not in "'\""
        return value if plain and value.lower() not in ("~", "null", "none") else json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        # Inside [a, b] a comma or bracket would split the item, so anything but a plain word is quoted.
        items = (v if _plain_word(v) else json.dumps(v, ensure_ascii=False) for v in value)
        return "[" + ", ".join(items) + "]"
    return json.dumps(value)


def _plain_word(value) -> bool:
    return isinstance(value, str) and bool(_WORD.match(value)) and yaml.safe_load(value) == value


def coerce_value(name: str, value, type_: str):
    """``value`` converted to field type ``type_`` (from YAML or a form), or a :class:`ConfigError`."""
    optional = "None" in type_
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        if optional:
            return None
        raise ConfigError("{name} cannot be empty.", name=name)
    base = type_.replace("| None", "").strip()
    if base == "str | list[str]":  # one text, or a list of them (one item stays a text)
        if isinstance(value, str) and "," in value:
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            return coerce_value(name, value, "str")
        items = coerce_value(name, value, "list[str]")
        return items[0] if len(items) == 1 else items
    if base in ("int | str", "bool | str"):  # a number or a switch that may be left to the lab: "auto"
        return _or_auto(name, value, base.split(" | ")[0])
    if base == "list[str]":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or any(isinstance(v, (dict, list)) for v in value):
            raise ConfigError("{name} must be a list, like [a, b], not {value!r}.", name=name, value=value)
        return [str(v) for v in value]
    if base == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError("{name} must be true or false, not {value!r}.", name=name, value=value)
    if base == "str":
        if isinstance(value, (dict, list)):
            raise ConfigError("{name} must be text, not {value!r}.", name=name, value=value)
        return str(value)
    return _number(name, value, int if base == "int" else float)


def _or_auto(name: str, value, base: str):
    text = value.strip().lower() if isinstance(value, str) else None
    if text == "auto":
        return "auto"
    if base == "bool" and text in ("true", "false", "on", "off"):
        return text in ("true", "on")
    try:
        return coerce_value(name, value, base)
    except ConfigError:
        if base == "bool":
            raise ConfigError("{name} must be true, false or auto, not {value!r}.", name=name, value=value) from None
        raise ConfigError("{name} must be a whole number or auto, not {value!r}.", name=name, value=value) from None


def _number(name: str, value, kind: type):
    # YAML 1.1 reads 1e-4 (no dot) as text, so numbers may arrive as strings.
    try:
        number = float(value) if isinstance(value, str) and not isinstance(value, bool) else value
    except ValueError:
        number = None
    if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
        raise ConfigError("{name} must be a number, not {value!r}.", name=name, value=value)
    if kind is int:
        if float(number) != int(number):
            raise ConfigError("{name} must be a whole number, not {value!r}.", name=name, value=value)
        return int(number)
    return float(number)
