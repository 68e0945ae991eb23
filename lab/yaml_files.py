"""YAML files a person writes (training configs, prompt presets, provider lists): strict reading,
where an unknown key is refused with the closest known one (:func:`closest`), and readable writing.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml

from lab.errors import ConfigError
from lab.paths import check_allowed
from lab.text import Msg


def closest(word: str, choices) -> Msg:
    """`` (did you mean 'x'?)`` for the closest of ``choices``, or an empty message: a value for a sentence."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    if not match:
        return Msg("")
    return Msg(" (did you mean '{match}'?)", match=match[0])


def load_yaml_strict(path: str | Path, allowed_keys) -> dict:
    """Read a YAML mapping from ``path``; an unknown top-level key is a :class:`ConfigError`.

    On a shared deployment a file outside the workspace is refused before it is read (its
    keys would otherwise come back in the error).
    """
    path = check_allowed(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError("{path}: file not found.", path=path) from None
    except UnicodeDecodeError:
        raise ConfigError("{path}: not a UTF-8 text file.", path=path) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = Msg(" at line {line}", line=mark.line + 1) if mark else Msg("")
        problem = getattr(err, "problem", None) or err
        raise ConfigError(
            "{path}: not valid YAML{where} ({problem}).", path=path, where=where, problem=problem
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError("{path}: expected a mapping of key: value lines, found {kind}.", path=path, kind=kind)
    check_keys(data, allowed_keys, str(path))
    return data


def check_keys(data: dict, allowed_keys, where: str | Msg) -> None:
    """Refuse the first key of ``data`` that is not in ``allowed_keys``, suggesting the closest.

    ``where`` names the place in the error: a :class:`~lab.text.Msg` ("the training config"), or a
    plain path, which reads the same in every language.
    """
    allowed = list(allowed_keys)
    for key in data:
        if key not in allowed:
            hint, names = closest(key, allowed), ", ".join(allowed)
            known = Msg("; known keys: {names}", names=names) if len(allowed) <= 12 else Msg("")
            raise ConfigError(
                "unknown key '{key}' in {where}{hint}{known}.", key=key, where=where, hint=hint, known=known
            )


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line prompts as ``|`` blocks, so a saved preset stays readable and editable."""


def _str_representer(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)


def dump_yaml(data: dict) -> str:
    """YAML text for ``data`` in key order, with Chinese kept readable and multi-line text as blocks."""
    return yaml.dump(data, Dumper=_BlockDumper, allow_unicode=True, sort_keys=False, width=100)
