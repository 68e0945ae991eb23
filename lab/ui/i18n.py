"""Labels in English and Chinese.

Each UI module declares its strings next to its widgets as
``STRINGS = {"key": ("English", "中文")}`` and registers them; widgets use ``t(key)``,
which the browser translates from its language (Gradio's ``I18n``). Messages made on
the server (status lines, errors) use ``text(key, lang)``.
"""

from __future__ import annotations

import inspect

import gradio as gr
from gradio.i18n import I18nData

from lab.errors import LANGS

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


def with_lang(ctx, fn):
    """``fn(*inputs, lang=...)`` as an event handler: the page's language comes from the request.

    Gradio injects the request into the first parameter by its annotation; the inputs follow.
    """
    if inspect.isgeneratorfunction(fn):
        def handler(request: gr.Request, *inputs):
            yield from fn(*inputs, lang=request_lang(ctx, request))
    else:
        def handler(request: gr.Request, *inputs):
            return fn(*inputs, lang=request_lang(ctx, request))
    handler.__name__ = getattr(fn, "__name__", "handler")
    return handler


# Column headers of tables. Gradio translates labels in the browser but not a Dataframe's
# headers, so a table made with :func:`table` gets its headers in the page's language from
# the server as the page loads (:func:`localize_page`), and handlers that fill a table
# name its columns with :func:`columns`.
# Words of Gradio's own page that its Chinese translation lacks.
_tables: list[tuple[gr.Dataframe, list[str]]] = []
_loads: list[tuple] = []


def columns(headers: list[str], lang: str = "en") -> list[str]:
    """English column headers in ``lang``; a header of several words ("rougeL base") word by word."""
    def one(header: str) -> str:
        if f"col.{header}" in _STRINGS:
            return text(f"col.{header}", lang)
        return " ".join(text(f"col.{w}", lang) if f"col.{w}" in _STRINGS else w for w in header.split(" "))

    return [one(h) for h in headers] if lang == "zh" else list(headers)


def table(headers: list[str], **kwargs) -> gr.Dataframe:
    """A Dataframe whose (English) ``headers`` are shown in the page's language."""
    frame = gr.Dataframe(headers=headers, **kwargs)
    _tables.append((frame, list(headers)))
    return frame


def at_page_load(fn, inputs, outputs) -> None:
    """Run ``fn(*inputs, lang=...)`` as each page loads: for text made on the server before any page existed."""
    _loads.append((fn, inputs, outputs))


def localize_page(ctx, app: gr.Blocks) -> None:
    """Wire what :func:`table` and :func:`at_page_load` asked for since the last call to the loading of ``app``'s pages."""
    loads = [(fn, inputs, outputs) for fn, inputs, outputs in _loads if app.blocks.get(outputs._id) is outputs]
    tables = [(frame, headers) for frame, headers in _tables if app.blocks.get(frame._id) is frame]
    _loads.clear()
    _tables.clear()
    for fn, inputs, outputs in loads:
        app.load(with_lang(ctx, fn), inputs, outputs, show_progress="hidden", api_visibility="undocumented")
    if not tables:
        return

    def on_load(request: gr.Request, *values):
        lang = request_lang(ctx, request)
        if lang != "zh":
            return [gr.update() for _ in tables]
        updates = []
        for (_, headers), value in zip(tables, values):
            rows = value.values.tolist() if hasattr(value, "values") else list(value or [])
            names = columns(headers, lang)
            updates.append(gr.update(value={"data": rows, "headers": names}, headers=names))
        return updates

    frames = [frame for frame, _ in tables]
    app.load(on_load, frames, frames, api_name="localize_tables", show_progress="hidden", api_visibility="undocumented")
