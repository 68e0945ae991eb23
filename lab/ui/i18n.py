"""Labels in English and Chinese.

Each UI module declares its strings next to its widgets as
``STRINGS = {"key": ("English", "中文")}`` and registers them; widgets use ``t(key)``,
which the browser translates from its language (Gradio's ``I18n``). Messages made on
the server (status lines, errors) use ``text(key, lang)``.
"""

from __future__ import annotations

import gradio as gr
from gradio.i18n import I18nData

LANGS = ("en", "zh")
_STRINGS: dict[str, tuple[str, str]] = {}


def register(strings: dict[str, tuple[str, str]]) -> None:
    for key, pair in strings.items():
        if key in _STRINGS and _STRINGS[key] != pair:
            raise ValueError(f"UI string {key!r} is registered twice with different texts")
        _STRINGS[key] = pair


def t(key: str) -> I18nData:
    """A label the browser shows in its language."""
    if key not in _STRINGS:
        raise KeyError(f"UI string {key!r} is not registered")
    return I18nData(key)


def text(key: str, lang: str = "en", **values: object) -> str:
    """A server-side message in ``lang`` ("en" or "zh"), formatted with ``values``."""
    en, zh = _STRINGS[key]
    return (zh if lang == "zh" else en).format(**values)


def build_i18n() -> gr.I18n:
    return gr.I18n(
        en={key: pair[0] for key, pair in _STRINGS.items()},
        zh={key: pair[1] for key, pair in _STRINGS.items()},
    )


# The browser's language decides, unless the person picked one with the switch (kept in
# localStorage) or the app was started with --lang. Gradio reads navigator.language when
# the page starts, so the choice is applied by overriding it before Gradio's scripts run.
_STORAGE_KEY = "vlm-lab-lang"


def head_script(forced: str | None = None) -> str:
    default = f'"{forced}"' if forced in LANGS else "null"
    return (
        "<script>(function(){var lang=null;"
        f"try{{lang=localStorage.getItem('{_STORAGE_KEY}');}}catch(e){{}}"
        f"lang=lang||{default};if(!lang)return;"
        "var tag=lang==='zh'?'zh-CN':'en-US';"
        "Object.defineProperty(navigator,'language',{get:function(){return tag;}});"
        "Object.defineProperty(navigator,'languages',{get:function(){return [tag];}});"
        "})();</script>"
    )


def switch_js(lang: str) -> str:
    """Browser-side handler of a language button: remember the choice and reload."""
    return (
        f"() => {{ try {{ localStorage.setItem('{_STORAGE_KEY}', '{lang}'); }} catch (e) {{}} "
        f"document.cookie = '{_STORAGE_KEY}={lang}; path=/; SameSite=Lax'; location.reload(); }}"
    )


def request_lang(request, forced: str | None = None) -> str:
    """The language for server-side messages: --lang, else the switch's cookie, else the browser's."""
    if forced in LANGS:
        return forced
    if request is None:
        return "en"
    chosen = (getattr(request, "cookies", None) or {}).get(_STORAGE_KEY)
    if chosen in LANGS:
        return chosen
    accept = (request.headers.get("accept-language", "") or "").lower()
    return "zh" if accept.startswith("zh") else "en"
