"""Prompt design tab: try one or two prompts on a few images before labeling a folder.

Also home of the labeler form (provider, model, key, limits) that the labeling tab
uses too. The API key typed here travels with each request from the page and lives
only as long as that request (or the run it starts); it is never stored on the server.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import gradio as gr

from lab.endpoint_client import environment_keys
from lab.errors import ConfigError, LabError, localize
from lab.labeling.client import ApiLabeler, LabelerConfig, load_providers
from lab.labeling.item import PromptSpec
from lab.labeling.local import LOCAL, LocalLabeler
from lab.labeling.preview import MAX_PREVIEW_IMAGES, preview_totals, run_preview
from lab.paths import SAMPLE_DATASET, under
from lab.presets import LANGS, PromptPreset, PromptText, list_prompt_presets, load_prompt_preset, save_prompt_preset
from lab.ui import i18n
from lab.ui.forms import Form, read_values
from lab.ui.i18n import request_lang, t
from lab.uploads import check_file

SAMPLE_IMAGES = SAMPLE_DATASET / "images"

STRINGS = {
    "labeler.title": ("Labeler", "标注模型"),
    "labeler.custom": ("Custom (type the base URL)", "自定义（填写 Base URL）"),
    "labeler.local": ("Local model loaded in the app (free, offline, slower)", "应用中已加载的本地模型（免费、离线、较慢）"),
    "labeler.use_local": ("Use the loaded local model instead", "改用已加载的本地模型"),
    "labeler.key_found": (
        "An API key was found in the environment; it is sent only to the base URL it was set up for, "
        "and a key typed below takes its place.",
        "已在环境变量中找到 API Key；它只会发往为它配置的 Base URL，在下方填写的 Key 会替代它。",
    ),
    "labeler.no_key": (
        "No API key is set. Type one in the API key box below (it stays in this page), or set OPENAI_API_KEY "
        "(DASHSCOPE_API_KEY for DashScope) before starting the app. Without a key you can label with the model "
        "loaded in the app: slower, free and offline.",
        "尚未设置 API Key。请在下方 API Key 输入框中填写（只保存在本页面），或在启动应用前设置环境变量 OPENAI_API_KEY"
        "（DashScope 用 DASHSCOPE_API_KEY）。没有 Key 也可以用应用中已加载的本地模型标注：较慢，但免费、离线。",
    ),
    "prompt.preset": ("Prompt preset", "提示词预设"),
    "prompt.lang": ("Prompt language", "提示词语言"),
    "prompt.refresh": ("Refresh presets", "刷新预设"),
    "prompt.variant_a": ("Prompt A", "提示词 A"),
    "prompt.variant_b": ("Prompt B", "提示词 B"),
    "prompt.use_b": ("Compare with prompt B on the same images", "在相同图片上与提示词 B 对比"),
    "prompt.system": ("System prompt", "系统提示词"),
    "prompt.user": ("User prompt (<image> marks where the picture goes)", "用户提示词（<image> 表示图片位置）"),
    "prompt.json": ("The answer is JSON", "回答为 JSON"),
    "prompt.keys": ("Expected JSON keys, comma-separated", "期望的 JSON 键，逗号分隔"),
    "prompt.samples": ("Sample images from data/sample", "data/sample 中的示例图片"),
    "prompt.upload": ("Or upload images (at most 8 in all)", "或上传图片（总共最多 8 张）"),
    "prompt.run": ("Run preview", "运行预览"),
    "prompt.answers_a": ("Answers to A", "A 的回答"),
    "prompt.answers_b": ("Answers to B", "B 的回答"),
    "prompt.details": ("Details: latency, tokens, cost, JSON validity", "详情：耗时、token、费用、JSON 是否有效"),
    "prompt.save_which": ("Save which prompt", "保存哪个提示词"),
    "prompt.save_name": ("New preset name (letters, digits, _ and -)", "新预设名称（字母、数字、_ 和 -）"),
    "prompt.save_title": ("Title shown in lists", "列表中显示的标题"),
    "prompt.save": ("Save as a preset", "保存为预设"),
    "prompt.status": ("Status", "状态"),
    "prompt.summary": (
        "**{name}**: {usable}/{total} usable · {seconds:.2f} s each · {prompt_tokens} + {completion_tokens} tokens · ${cost:.4f}",
        "**{name}**：{usable}/{total} 可用 · 每张 {seconds:.2f} 秒 · {prompt_tokens} + {completion_tokens} token · ${cost:.4f}",
    ),
    "prompt.saved": ("Saved {path}; the labeling tab can use '{name}' now.", "已保存 {path}；标注页现在就可以使用“{name}”。"),
}
i18n.register(STRINGS)

DETAIL_HEADERS = ["image", "prompt", "status", "answer", "seconds", "tokens", "cost $", "JSON ok"]


# ---------------------------------------------------------------- the labeler form

# The labeler's widgets as the API takes them (prompt_preview, label_start, label_estimate, ...).
LABELER_INPUTS = ("provider", "base_url", "model", "api_key", "temperature", "max_new_tokens", "max_pixels",
                  "json_mode", "reask", "concurrency", "max_retries", "timeout")


def _env_key() -> str | None:
    return next(iter(environment_keys()), None)


def _provider_fields(provider: str):
    entry = load_providers().get(provider or "")
    if provider == LOCAL:
        return gr.update(interactive=False), gr.update(interactive=False)
    if entry is None:  # custom: keep what was typed
        return gr.update(interactive=True), gr.update(interactive=True)
    models = entry["models"] or [""]
    return gr.update(value=entry["base_url"], interactive=True), gr.update(choices=models, value=models[0], interactive=True)


def labeler_start() -> LabelerConfig:
    """What the form shows first: the OpenAI preset (when there is one) with its URL and first model."""
    providers = load_providers()
    start = "openai" if "openai" in providers else ""
    entry = providers.get(start, {})
    return LabelerConfig(provider=start, base_url=entry.get("base_url", ""), model=(entry.get("models") or [""])[0])


def labeler_form(api_prefix: str) -> Form:
    """The labeler's settings; ``api_prefix`` keeps its event names apart per tab."""
    providers, start = load_providers(), labeler_start()
    choices = [(entry.get("title", name), name) for name, entry in providers.items()]
    choices += [(STRINGS["labeler.custom"][0], ""), (STRINGS["labeler.local"][0], LOCAL)]
    env = _env_key()
    form = Form(LabelerConfig, start)
    with gr.Accordion(t("labeler.title"), open=True):
        gr.Markdown(t("labeler.key_found") if env else t("labeler.no_key"))
        with gr.Row():
            form.add("provider", choices=choices, scale=2)
            form.add("base_url", scale=3)
            form.add("model", choices=providers.get(start.provider, {}).get("models", []), allow_custom_value=True,
                     scale=2)  # fmt: skip
            form.add("api_key", scale=3)
        form.row("temperature", "max_new_tokens", "max_pixels", "concurrency", "max_retries", "timeout")
        with gr.Row():
            form.add("json_mode")
            form.add("reask")
            use_local = gr.Button(t("labeler.use_local"), size="sm", visible=not env)
    form["provider"].change(_provider_fields, form["provider"], [form["base_url"], form["model"]],
                            api_name=f"{api_prefix}_provider")  # fmt: skip
    use_local.click(lambda: LOCAL, outputs=form["provider"], api_name=f"{api_prefix}_use_local")
    return form


def labeler_config(values: Mapping) -> LabelerConfig:
    """The labeler's settings from the form's values by field name; a bad value is one ConfigError."""
    return read_values(LabelerConfig, values)


def make_labeler(ctx, config: LabelerConfig):
    """The labeler ``config`` describes: an API client, or the app's loaded model."""
    if config.provider == LOCAL:
        if ctx.handle.loaded is None:
            raise LabError("No model is loaded in the app yet; wait for it to load, or pick an API provider.",
                           zh="应用中还没有加载模型；请等它加载完成，或选择一个 API 服务商。")
        return LocalLabeler(ctx.handle, config)
    return ApiLabeler(config)


# ---------------------------------------------------------------- prompts and preview


def sample_image_names() -> list[str]:
    """The bundled sample images offered for previews."""
    return sorted(p.name for p in SAMPLE_IMAGES.glob("*.png")) if SAMPLE_IMAGES.is_dir() else []


def load_preset_fields(name: str, lang: str, lang_ui: str = "en"):
    """System, user, JSON flag and expected keys of a preset, for variant A."""
    try:
        preset = load_prompt_preset(name)
    except LabError as err:
        raise gr.Error(localize(err, lang_ui)) from None
    system, user, keys = preset.prompt(lang or "en")
    return system, user, preset.json, ", ".join(keys)


def _keys(text: str) -> tuple[str, ...]:
    return tuple(k.strip() for k in (text or "").replace("，", ",").split(",") if k.strip())


def _spec(system: str, user: str, want_json: bool, keys: str) -> PromptSpec:
    if not (user or "").strip():
        raise ConfigError("The user prompt is empty; write what to ask about each image.",
                          zh="用户提示词为空；请写下要对每张图片问什么。")
    return PromptSpec(system or "", user, bool(want_json), _keys(keys))


def _chosen_images(samples: list[str] | None, uploads: list | None) -> list[Path]:
    images = [under(SAMPLE_IMAGES, name) for name in samples or []]
    images += [check_file(getattr(u, "name", u)) for u in uploads or []]
    if not images:
        raise ConfigError("Pick or upload at least one image for the preview.", zh="请至少选择或上传一张图片用于预览。")
    if len(images) > MAX_PREVIEW_IMAGES:
        raise ConfigError(f"A preview takes at most {MAX_PREVIEW_IMAGES} images; {len(images)} are chosen.",
                          zh=f"一次预览最多 {MAX_PREVIEW_IMAGES} 张图片；当前选了 {len(images)} 张。")
    return images


def _json_mark(result, want_json: bool) -> str:
    if not want_json:
        return "—"
    return "✓" if result.ok else "✗"


def _summary_line(name: str, results: list, lang: str) -> str:
    totals = preview_totals(results)
    return i18n.text("prompt.summary", lang, name=name, usable=sum(r.ok for r in results), total=len(results),
                     seconds=totals["mean_seconds"], prompt_tokens=totals["prompt_tokens"],
                     completion_tokens=totals["completion_tokens"], cost=totals["cost_usd"])  # fmt: skip


def preview_prompts(ctx, samples, uploads, a_system, a_user, a_json, a_keys, use_b, b_system, b_user, b_json, b_keys,
                    labeler: Mapping, lang_ui: str = "en"):
    """Run A (and B) on the chosen images with the labeler's settings (by name): summary, one gallery per
    variant, and a details table."""
    try:
        images = _chosen_images(samples, uploads)
        prompts = [_spec(a_system, a_user, a_json, a_keys)]
        if use_b:
            prompts.append(_spec(b_system, b_user, b_json, b_keys))
        results = run_preview(images, prompts, make_labeler(ctx, labeler_config(labeler)))
    except LabError as err:
        return localize(err, lang_ui), [], [], []
    names = ["A", "B"]
    galleries, rows, lines = [], [], []
    for name, prompt, row in zip(names, prompts, results):
        lines.append(_summary_line(name, row, lang_ui))
        galleries.append([(str(image), r.answer or f"[{r.status}] {localize(r.reason, lang_ui)}")
                          for image, r in zip(images, row)])  # fmt: skip
        for image, r in zip(images, row):
            reason = localize(r.reason, lang_ui)
            rows.append([image.name, name, r.status, r.answer if r.ok else f"{reason}: {r.answer}".rstrip(": "),
                         round(r.seconds, 2), f"{r.prompt_tokens}+{r.completion_tokens}", round(r.cost_usd, 6),
                         _json_mark(r, prompt.want_json)])
    galleries += [[]] * (2 - len(galleries))
    return "  \n".join(lines), galleries[0], galleries[1], rows


def save_prompt(which, name, title, lang, a_system, a_user, a_json, a_keys, b_system, b_user, b_json, b_keys,
                lang_ui: str = "en"):
    """Save variant A or B as a user preset (in this language; its other language is kept)."""
    system, user, want_json, keys = (b_system, b_user, b_json, b_keys) if which == "B" else (a_system, a_user, a_json, a_keys)
    name = (name or "").strip()
    lang = lang if lang in LANGS else "en"
    try:
        spec = _spec(system, user, want_json, keys)
        texts, titles = {}, {}
        if name in list_prompt_presets():
            old = load_prompt_preset(name)
            texts, titles = dict(old.texts), dict(old.title)
        texts[lang] = PromptText(spec.system, spec.user, spec.expected_keys)
        if (title or "").strip():
            titles[lang] = title.strip()
        path = save_prompt_preset(PromptPreset(name=name, texts=texts, title=titles, json=spec.want_json))
    except LabError as err:
        return localize(err, lang_ui), gr.update()
    return i18n.text("prompt.saved", lang_ui, path=path, name=name), gr.update(choices=list_prompt_presets(), value=name)


def _variant(label_key: str, initial=("", "", False, "")):
    with gr.Column():
        gr.Markdown(t(label_key))
        system = gr.Textbox(initial[0], label=t("prompt.system"), lines=2)
        user = gr.Textbox(initial[1], label=t("prompt.user"), lines=5)
        with gr.Row():
            want_json = gr.Checkbox(initial[2], label=t("prompt.json"))
            keys = gr.Textbox(initial[3], label=t("prompt.keys"))
    return system, user, want_json, keys


def create_tab(ctx) -> None:
    presets = list_prompt_presets()
    first = "sample_caption" if "sample_caption" in presets else (presets[0] if presets else None)
    with gr.Row():
        preset = gr.Dropdown(presets, value=first, label=t("prompt.preset"), scale=3)
        lang = gr.Radio(list(LANGS), value="en", label=t("prompt.lang"), scale=1)
        refresh = gr.Button(t("prompt.refresh"), scale=1)
    initial = load_preset_fields(first, "en") if first else ("", "", False, "")
    with gr.Row():
        a = _variant("prompt.variant_a", initial)
        b = _variant("prompt.variant_b", initial)
    use_b = gr.Checkbox(False, label=t("prompt.use_b"))
    with gr.Row():
        names = sample_image_names()
        samples = gr.Dropdown(names, value=names[:4], multiselect=True, max_choices=MAX_PREVIEW_IMAGES,
                              label=t("prompt.samples"), scale=3)
        uploads = gr.File(file_count="multiple", file_types=["image"], type="filepath", label=t("prompt.upload"), scale=2)
    form = labeler_form("prompt")
    run = gr.Button(t("prompt.run"), variant="primary")
    summary = gr.Markdown()
    with gr.Row():
        gallery_a = gr.Gallery(label=t("prompt.answers_a"), columns=4, height=300)
        gallery_b = gr.Gallery(label=t("prompt.answers_b"), columns=4, height=300)
    details = i18n.table(DETAIL_HEADERS, label=t("prompt.details"), wrap=True, interactive=False)
    with gr.Row():
        which = gr.Radio(["A", "B"], value="A", label=t("prompt.save_which"), scale=1)
        save_name = gr.Textbox(label=t("prompt.save_name"), scale=2)
        save_title = gr.Textbox(label=t("prompt.save_title"), scale=2)
        save = gr.Button(t("prompt.save"), scale=1)
    status = gr.Textbox(label=t("prompt.status"))

    def on_load(request: gr.Request, name, prompt_lang):
        return load_preset_fields(name, prompt_lang, request_lang(ctx, request))

    def on_preview(request: gr.Request, *values, **labeler):
        return preview_prompts(ctx, *values, labeler=labeler, lang_ui=request_lang(ctx, request))

    preset.change(on_load, [preset, lang], list(a), api_name="prompt_load")
    lang.change(on_load, [preset, lang], list(a), api_name="prompt_load_lang")
    refresh.click(lambda: gr.update(choices=list_prompt_presets()), outputs=preset, api_name="prompt_presets")
    run.click(on_preview, [samples, uploads, *a, use_b, *b], [summary, gallery_a, gallery_b, details],
              api_name="prompt_preview", inputs_kwargs=form.named(*LABELER_INPUTS))  # fmt: skip

    def on_save(request: gr.Request, *values):  # the request comes first: see labeling_tab.create_tab
        return save_prompt(*values, lang_ui=request_lang(ctx, request))

    save.click(on_save, [which, save_name, save_title, lang, *a, *b], [status, preset], api_name="prompt_save")
