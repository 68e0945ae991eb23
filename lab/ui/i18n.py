"""The page's language: labels, handlers and table headers.

English is the key. A widget takes ``t("Start training")``; the browser shows it in the page's
language through Gradio's ``I18n``, built from the catalogs in ``lab/locales/``. A handler made
with :func:`handler` gets the page's language as ``lang=`` and shows a
:class:`~lab.errors.LabError` as the page's sentence; text made on the server is
``localize(Msg("Started {name}.", name=name), lang)``.
"""

from __future__ import annotations

import inspect
import json

import gradio as gr
from gradio.i18n import I18nData

from lab.errors import LabError, localize
from lab.text import LANGS, Msg, catalog

ERROR_TITLE = Msg("Error")  # the title of the pop-up that shows a refusal
_LABELS: dict[str, str] = {}  # catalog key -> English, of every label made with t()
# Words of Gradio's own page that its Chinese translation lacks: Gradio's keys, with their English;
# the catalogs translate them under the same keys.
GRADIO_WORDS = {
    "common.complete": "Complete",
    "common.runs": "Runs",
    "common.runs_description": "View runs saved in this browser",
    "common.back_to_app": "App",
    "common.back_to_app_description": "Return to the app",
    "common.progress": "Progress",
    "common.run": "Run",
    "common.download_all": "Download All",
}


def t(text: str | Msg, context: str | None = None) -> I18nData:
    """A label the browser shows in the page's language; its English is the key of its translations.

    ``context`` tells apart two labels with the same English and different translations (gettext's
    msgctxt): their catalog key is ``context + "\\x04" + text``.
    """
    english = text.template if isinstance(text, Msg) else text
    key = english if context is None else f"{context}\x04{english}"
    _LABELS[key] = english
    return I18nData(key)


def build_i18n() -> gr.I18n:
    """Gradio's translations of every label made so far: its English, and each catalog's entry."""
    translations = {"en": {**GRADIO_WORDS, **_LABELS}}
    for lang in LANGS[1:]:
        words = catalog(lang)
        translations[lang] = {key: words[key] for key in [*_LABELS, *GRADIO_WORDS] if key in words}
    return gr.I18n(**translations)


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
        "var tag={en:'en-US',zh:'zh-CN'}[lang]||lang;"
        "Object.defineProperty(navigator,'language',{get:function(){return tag;}});"
        "Object.defineProperty(navigator,'languages',{get:function(){return [tag];}});"
        "})();</script>" + _toast_title_script()
    )


def _toast_title_script() -> str:
    """Gradio 6 titles an error pop-up with its kind in English ("Error"), whatever ``gr.Error(title=...)``
    says: this script writes the page language's word there as each pop-up appears."""
    titles = json.dumps({lang: localize(ERROR_TITLE, lang) for lang in LANGS}, ensure_ascii=False)
    return (
        f"<script>(function(){{var titles={titles};function word(){{var l=null;"
        f"try{{l=localStorage.getItem('{_STORAGE_KEY}');}}catch(e){{}}"
        "return titles[l||(navigator.language||'en').split('-')[0]];}"
        "new MutationObserver(function(){var w=word();if(!w)return;"
        "document.querySelectorAll('.toast-title.error').forEach(function(el){var n=el.firstChild;"
        "if(n&&n.nodeType===3&&n.nodeValue.trim()!==w)n.nodeValue=w+' ';});})"
        ".observe(document.documentElement,{childList:true,subtree:true});})();</script>"
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
    """Browser-side handler of a language button: remember the choice and change the page's language in
    place, so nothing typed, chatted or shown is lost.

    Gradio's own language setting (its Settings panel) calls ``changeLocale`` of its core module; the
    button calls the same function of the module the page has already loaded. Should a later Gradio
    name it differently, the page reloads in the new language instead (what the button did before).
    """
    tag = {"en": "en", "zh": "zh-CN"}.get(lang, lang)  # as the page's own start (head_script) names it
    return (
        f"async () => {{ try {{ localStorage.setItem('{_STORAGE_KEY}', '{lang}'); }} catch (e) {{}} "
        f"document.cookie = '{_STORAGE_KEY}={lang}; path=/; SameSite=Lax'; "
        "const core = performance.getEntriesByType('resource').map((e) => e.name)"
        ".find((name) => /\\/core-[\\w-]+\\.js(\\?|$)/.test(name)); "
        f"try {{ (await import(core)).changeLocale('{tag}'); }} catch (e) {{ location.reload(); }} }}"
    )


_switches: list[tuple] = []  # (lang, button, its click), whose server-side follow-ups localize_page adds


def switch_button(lang: str, label: str, **options) -> gr.Button:
    """The button that switches the page to ``lang`` (:func:`switch_js`); what the server wrote for the page
    (table headers, texts made at page load) is written again in the new language (:func:`localize_page`)."""
    button = gr.Button(label, **options)
    _switches.append((lang, button, button.click(None, js=switch_js(lang), api_name=f"lang_{lang}")))
    return button


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
    first = accept.split(",")[0].split(";")[0].split("-")[0].strip()
    return first if first in LANGS else "en"


def handler(ctx, fn=None, *, on_error=None):
    """``fn(*inputs, lang=...)`` as an event handler, in the page's language (:func:`request_lang`).

    A :class:`LabError` from ``fn`` becomes the page's sentence: ``on_error(sentence)`` gives the
    outputs that show it (a status box), else it is raised as ``gr.Error`` (a toast). The handler
    has ``fn``'s parameters but ``lang``, after the request: they name the event's API parameters,
    and a ``**values`` parameter takes the event's ``inputs_kwargs`` (a form's fields by name).
    ``fn`` may take the request too, as ``request=``. Also a decorator: ``@handler(ctx, on_error=...)``.
    """
    if fn is None:
        return lambda f: handler(ctx, f, on_error=on_error)
    wants_request = "request" in inspect.signature(fn).parameters

    def shown(err: LabError, lang: str):
        if on_error is None:  # a handled sentence: no traceback in the server's terminal
            raise gr.Error(localize(err, lang), title=localize(ERROR_TITLE, lang), print_exception=False) from None
        return on_error(localize(err, lang))

    if inspect.isgeneratorfunction(fn):

        def wrapper(request: gr.Request, *inputs, **named):
            lang = request_lang(ctx, request)
            extra = {"request": request} if wants_request else {}
            try:
                yield from fn(*inputs, **named, lang=lang, **extra)
            except LabError as err:
                yield shown(err, lang)
    else:

        def wrapper(request: gr.Request, *inputs, **named):
            lang = request_lang(ctx, request)
            extra = {"request": request} if wants_request else {}
            try:
                return fn(*inputs, **named, lang=lang, **extra)
            except LabError as err:
                return shown(err, lang)

    return _signed(wrapper, fn)


def _signed(wrapper, fn):
    """``wrapper(request, *inputs, **named)`` with the signature of ``fn`` (without ``lang``) after the request."""
    kind = inspect.Parameter.POSITIONAL_OR_KEYWORD
    params = [p for p in inspect.signature(fn).parameters.values() if p.name not in ("lang", "request")]
    wrapper.__signature__ = inspect.Signature([inspect.Parameter("request", kind, annotation=gr.Request), *params])
    # Gradio finds the request (and gr.SelectData) parameters by these annotations.
    hints = {k: v for k, v in _annotations(fn).items() if k not in ("lang", "request", "return")}
    wrapper.__annotations__ = {**hints, "request": gr.Request}
    wrapper.__name__ = getattr(fn, "__name__", "handler")
    return wrapper


def _annotations(fn) -> dict:
    """``fn``'s annotations, each resolved where it can be (in ``fn``'s module, else here); others left out."""
    found = {}
    for name, annotation in getattr(fn, "__annotations__", {}).items():
        for scope in (getattr(fn, "__globals__", {}), globals()) if isinstance(annotation, str) else ():
            try:
                annotation = eval(annotation, dict(scope))  # what typing.get_type_hints does
                break
            except Exception:
                continue
        if not isinstance(annotation, str):
            found[name] = annotation
    return found


# Column headers of tables. Gradio translates labels in the browser but not a Dataframe's
# headers, so a table made with :func:`table` gets its headers in the page's language from
# the server as the page loads (:func:`localize_page`), and handlers that fill a table
# name its columns with :func:`columns`. Headers are English, made of these words.
HEADER_WORDS = {
    word.template: word
    for word in (
        Msg("id"),
        Msg("prompt"),
        Msg("answer"),
        Msg("source"),
        Msg("status"),
        Msg("answer / reason"),
        Msg("tokens"),
        Msg("cost $"),
        Msg("seconds"),
        Msg("reason"),
        Msg("reject"),
        Msg("image"),
        Msg("JSON ok"),
        Msg("run"),
        Msg("method"),
        Msg("model"),
        Msg("step"),
        Msg("loss"),
        Msg("eval loss"),
        Msg("started"),
        Msg("path"),
        Msg("metric"),
        Msg("gain"),
        Msg("reference"),
        Msg("base"),
        Msg("tuned"),
        Msg("endpoint"),
    )
}
_tables: list[tuple[gr.Dataframe, list[str]]] = []
_loads: list[tuple] = []
_named: list[tuple] = []  # (component, English label) whose label the switch sends again


def columns(headers: list[str], lang: str = "en") -> list[str]:
    """English column headers in ``lang``; a header of several words ("rougeL base") word by word."""

    def word(text: str) -> str:
        return HEADER_WORDS[text].localize(lang) if text in HEADER_WORDS else text

    return [word(h) if h in HEADER_WORDS else " ".join(word(w) for w in h.split(" ")) for h in headers]


def table(headers: list[str], **kwargs) -> gr.Dataframe:
    """A Dataframe whose (English) ``headers`` are shown in the page's language."""
    frame = gr.Dataframe(headers=headers, **kwargs)
    _tables.append((frame, list(headers)))
    return frame


def relabel_on_switch(component, label: str | Msg) -> None:
    """Send ``component``'s label again when the language switch is pressed: a tab that is not open keeps
    the name it was given when the page started, unless its label comes anew (Gradio's tab bar)."""
    _named.append((component, label))


def at_page_load(fn, inputs, outputs, *, api_name: str, on_error=None, on_switch: bool = True) -> None:
    """Run ``fn(*inputs, lang=...)`` as each page loads (a :func:`handler`): for text made on the server
    before any page existed. ``on_switch``: again when the language switch is pressed (text only; a choice
    the person may have changed since, such as the prompt language, is left alone), as
    ``lang_<lang>_<api_name>``."""
    _loads.append((fn, inputs, outputs, on_error, on_switch, api_name))


def _in_app(app: gr.Blocks, outputs) -> bool:
    first = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    return app.blocks.get(first._id) is first


def localize_page(ctx, app: gr.Blocks) -> None:
    """Wire what :func:`table` and :func:`at_page_load` asked for since the last call to the loading of ``app``'s
    pages.
    """
    loads = [load for load in _loads if _in_app(app, load[2])]
    tables = [(frame, headers) for frame, headers in _tables if app.blocks.get(frame._id) is frame]
    switches = [(lang, clicked) for lang, button, clicked in _switches if app.blocks.get(button._id) is button]
    named = [(component, label) for component, label in _named if app.blocks.get(component._id) is component]
    _loads.clear()
    _tables.clear()
    _switches.clear()
    _named.clear()
    for lang, clicked in switches if named else ():
        clicked.then(
            lambda: [gr.update(label=t(label)) for _, label in named],  # dynamic template: tab names
            None,
            [c for c, _ in named],
            show_progress="hidden",
            api_name=f"lang_{lang}_labels",
            api_visibility="undocumented",
        )
    for fn, inputs, outputs, on_error, on_switch, name in loads:
        app.load(
            handler(ctx, fn, on_error=on_error),
            inputs,
            outputs,
            show_progress="hidden",
            api_name=name,
            api_visibility="undocumented",
        )
        for lang, clicked in switches if on_switch else ():  # after the click's script has set the new language
            clicked.then(
                handler(ctx, fn, on_error=on_error),
                inputs,
                outputs,
                show_progress="hidden",
                api_name=f"lang_{lang}_{name}",
                api_visibility="undocumented",
            )
    if not tables:
        return

    def relabel(values, lang: str):
        updates = []
        for (_, headers), value in zip(tables, values):
            rows = value.values.tolist() if hasattr(value, "values") else list(value or [])
            if rows and len(rows[0]) != len(headers):  # a result with other columns: its handler named them
                updates.append(gr.update())
                continue
            names = columns(headers, lang)
            updates.append(gr.update(value={"data": rows, "headers": names}, headers=names))
        return updates

    def on_load(*values, lang: str):
        return [gr.update() for _ in tables] if lang == "en" else relabel(values, lang)

    def on_switch(*values, lang: str):
        return relabel(values, lang)

    frames = [frame for frame, _ in tables]
    app.load(
        handler(ctx, on_load),
        frames,
        frames,
        api_name="localize_tables",
        show_progress="hidden",
        api_visibility="undocumented",
    )
    for lang, clicked in switches:
        clicked.then(
            handler(ctx, on_switch),
            frames,
            frames,
            show_progress="hidden",
            api_name=f"lang_{lang}_tables",
            api_visibility="undocumented",
        )
