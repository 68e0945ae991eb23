"""Forms made from a settings class: one widget per field, read back into an instance by name.

A field's label, widget kind, range and choices come from its :func:`lab.settings.setting`
metadata, so a tab only places the widgets (in its own rows and accordions) and a handler
never unpacks values by position::

    form = Form(ChatSettings)              # labels: the fields' English, shown with i18n.t
    with gr.Row():
        form.add("temperature")
        form.add("max_new_tokens", scale=2)
    button.click(on_send, inputs_kwargs={**form.named(), "message": box}, ...)

    def on_send(request: gr.Request, **values):
        settings = form.read(values)       # a ChatSettings; bad values are one ConfigError

Events get the widgets through Gradio's ``inputs_kwargs``, so the API names each parameter
after its field. The defaults are the class's, or those of the instance the form is made with.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import gradio as gr

from lab.settings import Setting, build, defaults, settings_of, values
from lab.text import Msg
from lab.ui import i18n

NONE = "none"  # how a dropdown shows the choice None


class Form:
    """Widgets for fields of settings class ``cls``, keyed by field name, with ``value``'s values (else the
    defaults)."""

    def __init__(self, cls: type, value=None):
        self.cls, self.value = cls, value
        self.fields = {s.name: s for s in settings_of(cls)}
        self.start = values(value) if value is not None else defaults(cls)
        self.components: dict[str, gr.components.Component] = {}

    def add(self, name: str, **options) -> gr.components.Component:
        """The widget of field ``name`` in the current layout; ``options`` go to the component (scale, choices, ...)."""
        component = widget(self.cls, self.fields[name], self.start.get(name), **options)
        self.components[name] = component
        return component

    def row(self, *names: str) -> list:
        with gr.Row():
            return [self.add(name) for name in names]

    def __getitem__(self, name: str) -> gr.components.Component:
        return self.components[name]

    def named(self, *names: str) -> dict:
        """``{field: widget}`` for ``inputs_kwargs``: ``names`` in that order, else every widget as added."""
        return {name: self.components[name] for name in names or self.components}

    @property
    def inputs(self) -> list:
        return list(self.components.values())

    def read(self, given: Mapping | Sequence, base=None):
        """An instance from the widgets' values: a mapping by field name (others are ignored), or a
        sequence in :attr:`inputs` order. Fields without a widget keep ``base``'s (else the form's) values."""
        if not isinstance(given, Mapping):
            given = dict(zip(self.components, given))
        return read_values(
            self.cls,
            {n: v for n, v in given.items() if n in self.components},
            base=base if base is not None else self.value,
        )


def read_values(cls: type, given: Mapping, base=None, where: str | Msg | None = None):
    """An instance of ``cls`` from widget values by field name, over ``base`` (else the defaults)."""
    fields = {s.name: s for s in settings_of(cls)}
    return build(cls, {n: from_widget(fields[n], v) for n, v in given.items() if n in fields}, base=base, where=where)


def shown_values(cls: type, obj, names: list[str]) -> list:
    """What the widgets of ``names`` show for instance ``obj``."""
    fields = {s.name: s for s in settings_of(cls)}
    return [to_widget(fields[name], getattr(obj, name)) for name in names]


def kind(s: Setting) -> str:
    """The widget kind: the declared one, else from the type and choices."""
    if s.widget:
        return s.widget
    if s.base_type == "bool":
        return "checkbox"
    if s.choices is not None:
        return "checkboxes" if s.base_type == "list[str]" else "dropdown"
    if s.options is not None:
        return "dropdown"
    return "number" if s.base_type in ("int", "float") else "text"


def to_widget(s: Setting, value):
    """A field's value as its widget shows it."""
    chosen = kind(s)
    if chosen == "paths":  # a multi-select: one path or several
        return [] if value is None else list(value) if isinstance(value, list) else [value]
    if value is None:
        return NONE if s.choices is not None and None in s.choices else None if chosen in ("number", "slider") else ""
    if s.choices is not None and _is_number(value):
        return str(value)  # the API shows a dropdown's choices as text (Literal['4', '8']); the field coerces back
    if isinstance(value, list) and chosen != "checkboxes":
        return ", ".join(value)
    return value


def from_widget(s: Setting, value):
    """A widget's value as the field's value, before the class coerces and checks it."""
    if s.choices is not None and None in s.choices and value == NONE:
        return None
    if isinstance(value, str):
        return value.strip()
    if value is None and s.base_type == "str" and not s.optional:
        return ""
    return value


def widget(cls: type, s: Setting, value, **options) -> gr.components.Component:
    """The component for field ``s`` showing ``value``."""
    options.setdefault("label", i18n.t(s.label, context=s.context))  # dynamic template: the field's label
    shown, chosen = to_widget(s, value), kind(s)
    if chosen == "checkbox":
        return gr.Checkbox(value=bool(shown), **options)
    if chosen == "slider":
        low = s.ui_min if s.ui_min is not None else s.min if s.min is not None else s.above
        high = s.ui_max if s.ui_max is not None else s.max
        return gr.Slider(low, high, value=shown, step=s.step or (1 if s.base_type == "int" else 0.01), **options)
    if chosen in ("dropdown", "checkboxes"):
        choices = options.pop("choices", None)
        choices = choices if choices is not None else _choices(cls, s)
        if not choices:  # filled by the tab later (a provider's models): anything typed is kept
            options.setdefault("allow_custom_value", True)
        if chosen == "checkboxes":
            return gr.CheckboxGroup(choices, value=shown, **options)
        return gr.Dropdown(choices, value=shown, **options)
    if chosen == "path":
        return gr.Dropdown(options.pop("choices", []), value=shown, allow_custom_value=True, **options)
    if chosen == "paths":  # pick several; a typed entry may carry a weight (data/x:0.5)
        return gr.Dropdown(
            options.pop("choices", []), value=shown, multiselect=True, allow_custom_value=True, **options
        )
    if chosen == "number":
        return gr.Number(value=shown, precision=0 if s.base_type == "int" else None, **options)
    if chosen == "password":
        return gr.Textbox(shown, type="password", **options)
    if chosen == "textarea":
        options.setdefault("lines", 3)
    return gr.Textbox(shown, **options)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _choices(cls: type, s: Setting) -> list:
    listed = s.choices if s.choices is not None else s.options or ()
    out = []
    for value in listed:
        shown = NONE if value is None else str(value) if _is_number(value) else value
        word = s.choice_labels.get(value)
        out.append((i18n.t(word), shown) if word is not None else shown)  # dynamic template: a choice's Msg
    return out
