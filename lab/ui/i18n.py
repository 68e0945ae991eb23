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
# localStorage) or the app was started with --lang. Gradio 6 picks its language from
# navigator.language as its page starts, and runs the scripts given as ``head=`` only after
# that, so the choice is applied by a script that the server puts into the page's HTML,
# ahead of Gradio's own (deferred) module script: see :class:`LanguageScript`.
_STORAGE_KEY = "vlm-lab-lang"


def head_script(forced: str | None = None) -> str:
    """The script that applies the chosen language (the switch's, else ``forced``) before Gradio starts."""
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


class LanguageScript:
    """ASGI middleware that puts :func:`head_script` at the end of the <head> of every HTML page.

    Give it to ``launch(app_kwargs={"middleware": [Middleware(LanguageScript, forced=...)]})``:
    middleware passed to the app's constructor sits inside Gradio's compression, so it sees
    the page as plain HTML.
    """

    def __init__(self, app, forced: str | None = None):
        self.app = app
        self.script = head_script(forced).encode()

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "GET":
            return await self.app(scope, receive, send)
        start: dict = {}
        chunks: list[bytes] = []

        async def buffer_html(message):
            if message["type"] == "http.response.start":
                headers = dict(message.get("headers", []))
                if b"text/html" in headers.get(b"content-type", b""):
                    start.update(message)  # held back until the whole page is here
                    return
            if not start or message["type"] != "http.response.body":
                return await send(message)
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                body = b"".join(chunks).replace(b"</head>", self.script + b"</head>", 1)
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                await send({**start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, buffer_html)


def switch_js(lang: str) -> str:
    """Browser-side handler of a language button: remember the choice and reload."""
    return (
        f"() => {{ try {{ localStorage.setItem('{_STORAGE_KEY}', '{lang}'); }} catch (e) {{}} "
        f"document.cookie = '{_STORAGE_KEY}={lang}; path=/; SameSite=Lax'; location.reload(); }}"
    )


def request_lang(ctx, request) -> str:
    """The language for server-side messages, by the page's own rule (:func:`head_script`): the
    person's switch (its cookie), else --lang, else the browser's."""
    forced = ctx.settings.lang if ctx is not None else None
    chosen = (getattr(request, "cookies", None) or {}).get(_STORAGE_KEY) if request is not None else None
    if chosen in LANGS:
        return chosen
    if forced in LANGS:
        return forced
    if request is None:
        return "en"
    accept = (request.headers.get("accept-language", "") or "").lower()
    return "zh" if accept.startswith("zh") else "en"
