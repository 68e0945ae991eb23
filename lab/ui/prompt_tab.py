"""Prompt design tab: try one or two prompts on a few images before labeling a folder.

Also home of the labeler form (provider, model, key, limits) that the labeling tab
uses too. The API key typed here travels with each request from the page and lives
only as long as that request (or the run it starts); it is never stored on the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from pathlib import Path

import gradio as gr

from lab.endpoint_keys import environment_keys
from lab.errors import ConfigError, LabError, localize
from lab.labeling.client import ApiLabeler, LabelerConfig, load_providers
from lab.labeling.item import PromptSpec
from lab.labeling.local import LOCAL, LOCAL_DEFAULTS, LocalLabeler, local_config
from lab.labeling.preview import MAX_PREVIEW_IMAGES, preview_line, sample_images, stream_preview
from lab.paths import SAMPLE_DATASET, under
from lab.presets import LANGS, PromptText, list_prompt_presets, load_prompt_preset, save_prompt_text
from lab.text import Msg
from lab.ui import i18n
from lab.ui.forms import Form, read_values
from lab.ui.i18n import t
from lab.uploads import check_file

SAMPLE_IMAGES = SAMPLE_DATASET / "images"


DETAIL_HEADERS = ["image", "prompt", "status", "answer", "seconds", "tokens", "cost $", "JSON ok"]


# ---------------------------------------------------------------- the labeler form

# The labeler's widgets as the API takes them (prompt_preview, label_start, label_estimate, ...).
LABELER_INPUTS = (
    "provider",
    "base_url",
    "model",
    "api_key",
    "temperature",
    "max_new_tokens",
    "max_pixels",
    "json_mode",
    "reask",
    "concurrency",
    "max_retries",
    "timeout",
)


def _env_key() -> str | None:
    return next(iter(environment_keys()), None)


# Settings only an API has: hidden while the local model labels (its knobs are LOCAL_KNOBS).
API_ONLY = ("base_url", "model", "api_key", "json_mode", "reask", "concurrency", "max_retries", "timeout")
LOCAL_KNOBS = ("temperature", "max_new_tokens", "max_pixels")


def provider_fields(provider: str, *knobs):
    """The form for ``provider``: an API's URL and models; for the local model only its own knobs, with the
    local labeler's defaults (and the API's defaults again when going back). Outputs: the fields of
    :data:`API_ONLY`, then :data:`LOCAL_KNOBS`, then the key notice and the "use the local model" button."""
    local, entry = provider == LOCAL, load_providers().get(provider or "")
    shown = {name: gr.update(visible=not local) for name in API_ONLY}
    if entry is not None:
        models = entry["models"] or [""]
        shown["base_url"] = gr.update(value=entry["base_url"], visible=True)
        shown["model"] = gr.update(choices=models, value=models[0], visible=True)
    was_local = tuple(knobs) == tuple(LOCAL_DEFAULTS[name] for name in LOCAL_KNOBS)
    start = local_config() if local else LabelerConfig() if was_local else None
    values = [gr.update() if start is None else gr.update(value=getattr(start, name)) for name in LOCAL_KNOBS]
    return [
        *(shown[name] for name in API_ONLY),
        *values,
        gr.update(visible=not local),
        gr.update(visible=not local and not _env_key()),
    ]


def labeler_start() -> LabelerConfig:
    """What the form shows first: the OpenAI preset (when there is one) with its URL and first model."""
    providers = load_providers()
    start = "openai" if "openai" in providers else ""
    entry = providers.get(start, {})
    return LabelerConfig(provider=start, base_url=entry.get("base_url", ""), model=(entry.get("models") or [""])[0])


def labeler_form(api_prefix: str, ctx=None) -> Form:
    """The labeler's settings; ``api_prefix`` keeps its event names apart per tab. With ``ctx``, the form of
    the tab before (Prompt design) is followed: the labeler chosen there is the one chosen here."""
    providers, start = load_providers(), labeler_start()
    choices = [(entry.get("title", name), name) for name, entry in providers.items()]
    choices += [
        (t("Custom (type the base URL)"), ""),
        (t("Local model loaded in the app (free, offline, slower)"), LOCAL),
    ]
    env = _env_key()
    form = Form(LabelerConfig, start)
    with gr.Accordion(t("Labeler"), open=True):
        if env:
            notice = gr.Markdown(
                t(
                    "An API key was found in the environment; it is sent only to the base URL it was set "
                    "up for, and a key typed below takes its place."
                )
            )
        else:
            notice = gr.Markdown(
                t(
                    "No API key is set. Type one in the API key box below (it stays in this page), or "
                    "set OPENAI_API_KEY (DASHSCOPE_API_KEY for DashScope) before starting the app. "
                    "Without a key you can label with the model loaded in the app: slower, free and "
                    "offline."
                )
            )
        with gr.Row():
            form.add("provider", choices=choices, scale=3, min_width=300)  # wide enough for the longest title
            form.add("base_url", scale=3)
            form.add(
                "model", choices=providers.get(start.provider, {}).get("models", []), allow_custom_value=True, scale=2
            )
            form.add("api_key", scale=3)
        form.row("temperature", "max_new_tokens", "max_pixels", "concurrency", "max_retries", "timeout")
        with gr.Row():
            form.add("json_mode")
            form.add("reask")
            use_local = gr.Button(t("Use the loaded local model instead"), size="sm", visible=not env)
    form["provider"].change(
        provider_fields,
        [form["provider"], *(form[name] for name in LOCAL_KNOBS)],
        [*(form[name] for name in (*API_ONLY, *LOCAL_KNOBS)), notice, use_local],
        api_name=f"{api_prefix}_provider",
    )
    use_local.click(lambda: LOCAL, outputs=form["provider"], api_name=f"{api_prefix}_use_local")
    if ctx is not None:
        _follow(ctx.forms.get("labeler"), form, api_prefix)
        ctx.forms["labeler"] = form
    return form


def _follow(before: Form | None, form: Form, api_prefix: str) -> None:
    """Copy each change of the labeler form of the tab before into ``form``."""
    if before is None:
        return
    gr.on(
        [before[name].change for name in LABELER_INPUTS],
        lambda *values: values,
        [before[name] for name in LABELER_INPUTS],
        [form[name] for name in LABELER_INPUTS],
        api_name=f"{api_prefix}_follow",
        show_progress="hidden",
        api_visibility="undocumented",
    )


def labeler_config(values: Mapping) -> LabelerConfig:
    """The labeler's settings from the form's values by field name; a bad value is one ConfigError."""
    return read_values(LabelerConfig, values)


def make_labeler(ctx, config: LabelerConfig):
    """The labeler ``config`` describes: an API client, or the app's loaded model."""
    if config.provider == LOCAL:
        if ctx.handle.loaded is None:
            raise LabError("No model is loaded in the app yet; wait for it to load, or pick an API provider.")
        return LocalLabeler(ctx.handle, config)
    return ApiLabeler(config)


# ---------------------------------------------------------------- prompts and preview


def sample_image_names() -> list[str]:
    """The bundled sample images offered for previews."""
    return [p.name for p in sample_images()]


def load_preset_fields(name: str, prompt_lang: str, lang: str = "en"):
    """System, user, JSON flag and expected keys of a preset, for variant A."""
    preset = load_prompt_preset(name)
    system, user, keys = preset.prompt(prompt_lang or "en")
    return system, user, preset.json, ", ".join(keys)


def page_prompts(name: str | None, lang: str):
    """The prompt language of a page in ``lang`` (its own, when presets have it) and preset ``name``'s
    fields in it, for both variants."""
    prompt_lang = lang if lang in LANGS else "en"
    fields = load_preset_fields(name, prompt_lang) if name else ("", "", False, "")
    return prompt_lang, *fields, *fields


def _keys(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in (text or "").replace("，", ",").split(",") if k.strip())


def _spec(system: str, user: str, want_json: bool, keys: str) -> PromptSpec:
    if not (user or "").strip():
        raise ConfigError("The user prompt is empty; write what to ask about each image.")
    return PromptSpec(system or "", user, bool(want_json), _keys(keys))


def _chosen_images(samples: list[str] | None, uploads: list | None) -> list[Path]:
    images = [under(SAMPLE_IMAGES, name) for name in samples or []]
    images += [check_file(getattr(u, "name", u)) for u in uploads or []]
    if not images:
        raise ConfigError("Pick or upload at least one image for the preview.")
    if len(images) > MAX_PREVIEW_IMAGES:
        raise ConfigError(
            "A preview takes at most {max_preview_images} images; {n_images} are chosen.",
            max_preview_images=MAX_PREVIEW_IMAGES,
            n_images=len(images),
        )
    return images


def _json_mark(result, want_json: bool) -> str:
    if not want_json:
        return "—"
    return "✓" if result.ok else "✗"


def _caption(result, lang: str) -> str:
    """An answer as the gallery shows it: the text, and why it is not usable when it is not."""
    if result.ok:
        return result.answer
    return f"[{localize(result.reason, lang)}] {result.answer}".strip()


def preview_outputs(images: list[Path], prompts: list[PromptSpec], results: list, lang: str):
    """(summary, gallery A, gallery B, details rows) of the results so far (None: not answered yet)."""
    galleries, rows, lines = [], [], []
    for name, prompt, row in zip(["A", "B"], prompts, results):
        answered = [(image, r) for image, r in zip(images, row) if r is not None]
        if len(answered) == len(images):
            lines.append(localize(preview_line(f"**{name}**", row), lang))
        galleries.append([(str(image), _caption(r, lang)) for image, r in answered])
        for image, r in answered:
            reason = localize(r.reason, lang)
            rows.append(
                [
                    image.name,
                    name,
                    r.status,
                    r.answer if r.ok else f"{reason}: {r.answer}".rstrip(": "),
                    round(r.seconds, 2),
                    f"{r.prompt_tokens}+{r.completion_tokens}",
                    round(r.cost_usd, 6),
                    _json_mark(r, prompt.want_json),
                ]
            )
    galleries += [[]] * (2 - len(galleries))
    done, total = sum(r is not None for row in results for r in row), len(images) * len(prompts)
    if done < total:
        lines = [localize(Msg("Answering… {done} of {total} answers so far.", done=done, total=total), lang)]
    return "  \n".join(lines), galleries[0], galleries[1], rows


def preview_prompts(
    ctx,
    samples,
    uploads,
    a_system,
    a_user,
    a_json,
    a_keys,
    use_b,
    b_system,
    b_user,
    b_json,
    b_keys,
    *,
    lang: str = "en",
    **labeler,
):
    """Run A (and B) on the chosen images with the labeler's settings (by name): summary, one gallery per
    variant, and a details table, shown answer by answer as they arrive."""
    images = _chosen_images(samples, uploads)
    prompts = [_spec(a_system, a_user, a_json, a_keys)]
    if use_b:
        prompts.append(_spec(b_system, b_user, b_json, b_keys))
    chosen = make_labeler(ctx, labeler_config(labeler))
    results: list = [[None] * len(images) for _ in prompts]
    yield preview_outputs(images, prompts, results, lang)
    for results in stream_preview(images, prompts, chosen):
        yield preview_outputs(images, prompts, results, lang)


def save_prompt(
    which,
    name,
    title,
    prompt_lang,
    a_system,
    a_user,
    a_json,
    a_keys,
    b_system,
    b_user,
    b_json,
    b_keys,
    lang: str = "en",
):
    """Save variant A or B as a user preset (in this language; its other language is kept)."""
    system, user, want_json, keys = (
        (b_system, b_user, b_json, b_keys) if which == "B" else (a_system, a_user, a_json, a_keys)
    )
    spec = _spec(system, user, want_json, keys)
    name = (name or "").strip()
    path = save_prompt_text(
        name, prompt_lang, PromptText(spec.system, spec.user, spec.expected_keys), spec.want_json, title
    )
    saved = Msg("Saved {path}; the labeling tab can use '{name}' now.", path=path, name=name)
    return localize(saved, lang), gr.update(choices=list_prompt_presets(), value=name)


def _variant(label, initial=("", "", False, "")):
    with gr.Column():
        gr.Markdown(label)
        system = gr.Textbox(initial[0], label=t("System prompt"), lines=2)
        user = gr.Textbox(initial[1], label=t("User prompt (<image> marks where the picture goes)"), lines=5)
        with gr.Row():
            want_json = gr.Checkbox(initial[2], label=t("The answer is JSON"))
            keys = gr.Textbox(initial[3], label=t("Expected JSON keys, comma-separated"))
    return system, user, want_json, keys


def create_tab(ctx) -> None:
    presets = list_prompt_presets()
    first = "sample_caption" if "sample_caption" in presets else (presets[0] if presets else None)
    with gr.Row():
        preset = gr.Dropdown(presets, value=first, label=t("Prompt preset"), scale=3)
        lang = gr.Radio(list(LANGS), value="en", label=t("Prompt language"), scale=1)
        refresh = gr.Button(t("Refresh presets"), scale=1)
    initial = load_preset_fields(first, "en") if first else ("", "", False, "")
    with gr.Row():
        a = _variant(t("Prompt A"), initial)
        b = _variant(t("Prompt B"), initial)
    use_b = gr.Checkbox(False, label=t("Compare with prompt B on the same images"))
    with gr.Row():
        names = sample_image_names()
        samples = gr.Dropdown(
            names,
            value=names[:4],
            multiselect=True,
            max_choices=MAX_PREVIEW_IMAGES,
            label=t("Sample images from data/sample"),
            scale=3,
        )
        uploads = gr.File(
            file_count="multiple",
            file_types=["image"],
            type="filepath",
            label=t("Or upload images (at most 8 in all)"),
            scale=2,
        )
    form = labeler_form("prompt", ctx)
    run = gr.Button(t("Run preview"), variant="primary")
    summary = gr.Markdown()
    with gr.Row():
        gallery_a = gr.Gallery(label=t("Answers to A"), columns=4, height=300)
        gallery_b = gr.Gallery(label=t("Answers to B"), columns=4, height=300)
    details = i18n.table(
        DETAIL_HEADERS, label=t("Details: latency, tokens, cost, JSON validity"), wrap=True, interactive=False
    )
    with gr.Row():
        which = gr.Radio(["A", "B"], value="A", label=t("Save which prompt"), scale=1)
        save_name = gr.Textbox(label=t("New preset name (letters, digits, _ and -)"), scale=2)
        save_title = gr.Textbox(label=t("Title shown in lists"), scale=2)
        save = gr.Button(t("Save as a preset"), scale=1)
    status = gr.Textbox(label=t("Status"))

    # A Chinese page starts with the prompts in Chinese (both variants, as the English ones did).
    i18n.at_page_load(
        lambda name, lang: page_prompts(name, lang),
        [preset],
        [lang, *a, *b],
        on_switch=False,
        api_name="prompt_page_lang",
    )
    on_load = i18n.handler(ctx, load_preset_fields)
    preset.change(on_load, [preset, lang], list(a), api_name="prompt_load")
    lang.change(on_load, [preset, lang], list(a), api_name="prompt_load_lang")
    refresh.click(lambda: gr.update(choices=list_prompt_presets()), outputs=preset, api_name="prompt_presets")
    run.click(
        i18n.handler(ctx, partial(preview_prompts, ctx), on_error=lambda sentence: (sentence, [], [], [])),
        [samples, uploads, *a, use_b, *b],
        [summary, gallery_a, gallery_b, details],
        api_name="prompt_preview",
        inputs_kwargs=form.named(*LABELER_INPUTS),
    )
    save.click(
        i18n.handler(ctx, save_prompt, on_error=lambda sentence: (sentence, gr.update())),
        [which, save_name, save_title, lang, *a, *b],
        [status, preset],
        api_name="prompt_save",
    )
