"""Prompt presets: a named system + user prompt, in Chinese and English.

Bundled presets live in ``presets/prompts/<name>.yaml``; presets a person saves go to
``<workspace>/presets/prompts/<name>.yaml``. A preset file looks like this (every
key not listed here is an error, so a typo never passes silently)::

    name: ui_function_json          # optional; defaults to the file name
    title: {en: UI component functions (JSON), zh: UI组件功能（JSON）}
    description: {en: One line on what it is for., zh: 一句话说明用途。}
    json: true                      # the answer is a JSON object (default false)
    zh:                             # one section per language: zh and/or en
      system: ""                    # system prompt; empty means none
      user: 帮我分析这个图片里组件传递的功能语义……
      expected_keys: [组件名, 功能]  # top-level keys of a good answer (json only)
    en:
      system: ""
      user: Analyse the functional semantics of the component in this image...
      expected_keys: [component, functions]

``title`` and ``description`` map a language (``en``, ``zh``) to text. ``user`` may
contain ``<image>`` where the picture goes (as in the dataset contract); without it
the picture comes first (:func:`with_image_placeholder`).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from lab.conversation import IMAGE_PLACEHOLDER
from lab.errors import ConfigError
from lab.paths import PRESETS_DIR, check_allowed, is_allowed, workspace
from lab.text import LANGS, Msg
from lab.yaml_files import check_keys, closest, dump_yaml, load_yaml_strict

PRESET_KEYS = ("name", "title", "description", "json", *LANGS)
TEXT_KEYS = ("system", "user", "expected_keys")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def bundled_prompts_dir() -> Path:
    return PRESETS_DIR / "prompts"


def user_prompts_dir() -> Path:
    """Where presets a person saves go (under the workspace, so tests and Spaces can move it)."""
    return workspace() / "presets" / "prompts"


@dataclass(frozen=True)
class PromptText:
    """The prompt of one language: system (may be empty), user, and for JSON answers the expected keys."""

    system: str
    user: str
    expected_keys: tuple[str, ...] = ()


@dataclass
class PromptPreset:
    """A named prompt in one or two languages, loaded from or saved to YAML."""

    name: str
    texts: dict[str, PromptText]
    title: dict[str, str] = field(default_factory=dict)
    description: dict[str, str] = field(default_factory=dict)
    json: bool = False
    source: Path | None = None  # the file it was loaded from, if any

    def __post_init__(self):
        if not _NAME.match(self.name or ""):
            raise ConfigError(
                "preset name '{name}' must be letters, digits, '_', '-' or '.', starting with a letter or digit.",
                name=self.name,
            )
        if not self.texts:
            raise ConfigError("prompt preset '{name}' has no prompt; give a 'zh' or 'en' section.", name=self.name)
        for lang, text in self.texts.items():
            if lang not in LANGS:
                raise ConfigError(
                    "prompt preset '{name}' has a prompt in '{lang}'; languages are zh and en.",
                    name=self.name,
                    lang=lang,
                )
            if not text.user.strip():
                raise ConfigError(
                    "prompt preset '{name}' has an empty user prompt for '{lang}'.", name=self.name, lang=lang
                )
            if self.json and not text.expected_keys:
                raise ConfigError(
                    "prompt preset '{name}' answers JSON but lists no expected_keys for '{lang}'.",
                    name=self.name,
                    lang=lang,
                )

    @property
    def langs(self) -> list[str]:
        return [lang for lang in LANGS if lang in self.texts]

    def prompt(self, lang: str = "en") -> tuple[str, str, list[str]]:
        """``(system, user, expected_keys)`` in ``lang``; the other language if only that one exists."""
        if lang not in self.texts:
            if lang not in LANGS:
                raise ConfigError("unknown language '{lang}'; choose zh or en.", lang=lang)
            lang = self.langs[0]
        text = self.texts[lang]
        return text.system, text.user, list(text.expected_keys)

    def label(self, lang: str = "en") -> str:
        """The title to show in a dropdown, falling back to the name."""
        return self.title.get(lang) or next(iter(self.title.values()), "") or self.name

    def to_dict(self) -> dict:
        """The YAML form, with keys in the documented order."""
        out: dict = {"name": self.name}
        if self.title:
            out["title"] = dict(self.title)
        if self.description:
            out["description"] = dict(self.description)
        out["json"] = self.json
        for lang in self.langs:
            text = self.texts[lang]
            out[lang] = {"system": text.system, "user": text.user}
            if text.expected_keys:
                out[lang]["expected_keys"] = list(text.expected_keys)
        return out


def preset_from_dict(data: dict, where: str, default_name: str = "") -> PromptPreset:
    """Build a :class:`PromptPreset` from its YAML mapping; ``where`` names the source in errors."""
    check_keys(data, PRESET_KEYS, where)
    texts = {}
    for lang in LANGS:
        section = data.get(lang)
        if section is None:
            continue
        if not isinstance(section, dict):
            raise ConfigError("'{lang}' in {where} must be a mapping with system and user.", lang=lang, where=where)
        section_name = Msg("the '{lang}' section of {where}", lang=lang, where=where)
        check_keys(section, TEXT_KEYS, section_name)
        keys = section.get("expected_keys") or []
        if not isinstance(keys, list):
            raise ConfigError(
                "expected_keys in the '{lang}' section of {where} must be a list, like [label, reason].",
                lang=lang,
                where=where,
            )
        system, user = _text(section.get("system"), "system", where), _text(section.get("user"), "user", where)
        texts[lang] = PromptText(system, user, tuple(str(k) for k in keys))
    is_json = data.get("json", False)
    if not isinstance(is_json, bool):
        raise ConfigError("'json' in {where} must be true or false, not {is_json!r}.", where=where, is_json=is_json)
    return PromptPreset(
        name=str(data.get("name") or default_name),
        texts=texts,
        json=is_json,
        title=_lang_map(data.get("title"), "title", where),
        description=_lang_map(data.get("description"), "description", where),
    )


def _text(value, key: str, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError("'{key}' in {where} must be text, not {value!r}.", key=key, where=where, value=value)
    return value


def _lang_map(value, key: str, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {"en": value}
    if not isinstance(value, dict):
        raise ConfigError(
            "'{key}' in {where} must map a language to text, like {{en: ..., zh: ...}}.", key=key, where=where
        )
    check_keys(value, LANGS, Msg("'{key}' of {where}", key=key, where=where))
    return {lang: _text(text, key, where) for lang, text in value.items()}


def _load_file(path: Path) -> PromptPreset:
    preset = preset_from_dict(load_yaml_strict(path, PRESET_KEYS), str(path), default_name=path.stem)
    preset.source = path
    return preset


def _preset_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.glob("*.yaml")) if is_allowed(p)}


def list_prompt_presets() -> list[str]:
    """Names of the bundled presets, then those the person saved (alphabetical within each)."""
    bundled = list(_preset_files(bundled_prompts_dir()))
    return bundled + [name for name in _preset_files(user_prompts_dir()) if name not in bundled]


def load_prompt_preset(name_or_path: str | Path) -> PromptPreset:
    """Load a bundled preset by name, a saved one by name, or any preset YAML file by path."""
    text = str(name_or_path)
    if text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text:
        return _load_file(Path(text).expanduser())
    for folder in (bundled_prompts_dir(), user_prompts_dir()):
        path = _preset_files(folder).get(text)
        if path:
            return _load_file(path)
    known = list_prompt_presets()
    hint, names = closest(text, known), ", ".join(known)
    raise ConfigError(
        "no prompt preset named '{text}'{hint}; known presets: {names}.", text=text, hint=hint, names=names
    )


def save_prompt_preset(preset: PromptPreset) -> Path:
    """Write ``preset`` into the user preset folder and return the file; bundled names are refused."""
    if preset.name in _preset_files(bundled_prompts_dir()):
        raise ConfigError(
            "'{preset_name}' is a bundled preset; save your version under another name.", preset_name=preset.name
        )
    folder = user_prompts_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = check_allowed(folder / f"{preset.name}.yaml", write=True)  # a saved name must not lead out of the workspace
    path.write_text(dump_yaml(preset.to_dict()), encoding="utf-8")
    return path


def save_prompt_text(name: str, lang: str, text: PromptText, want_json: bool, title: str = "") -> Path:
    """Save ``text`` as the ``lang`` prompt of the user preset ``name`` (its other language, if saved
    before, is kept) and return the file; the prompt tab and ``python -m lab prompt save`` call this."""
    name, lang = (name or "").strip(), lang if lang in LANGS else "en"
    texts: dict[str, PromptText] = {}
    titles: dict[str, str] = {}
    if name in list_prompt_presets():
        old = load_prompt_preset(name)
        texts, titles = dict(old.texts), dict(old.title)
    texts[lang] = text
    if (title or "").strip():
        titles[lang] = title.strip()
    return save_prompt_preset(PromptPreset(name=name, texts=texts, title=titles, json=bool(want_json)))


def prompt_sha(system: str, user: str, *extra) -> str:
    """A short stable hash of a prompt (plus e.g. model and settings) that keys labeling results.

    Line endings and surrounding whitespace are normalised first: a browser textbox
    sends ``\\r\\n`` and YAML block scalars add a final newline, and neither should make
    the same prompt look new and trigger paying for the labels again.
    """
    parts = [_normalise(system), _normalise(user), *extra]
    blob = json.dumps(parts, ensure_ascii=False, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def _normalise(text: str | None) -> str:
    return (text or "").replace("\r\n", "\n").replace("\r", "\n").strip()


def with_image_placeholder(user: str) -> str:
    """``user`` with ``<image>`` at the front unless it already says where the picture goes."""
    return user if IMAGE_PLACEHOLDER in user else IMAGE_PLACEHOLDER + user
