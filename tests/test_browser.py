"""A real browser (Debian's Chromium driven by Playwright) uses the whole app, as people do.

Every tab renders in English and Chinese; a training run started from the Train tab draws
its loss curve; Evaluate shows base vs tuned; a chat message with a picture gets an answer;
a prompt preview shows the labeler's answers; two visitors at once: one trains (and types an
API key), the other is told the model is busy, still browses datasets, and never sees the
key; the language switch changes the tab names. Screenshots go to ``test-artifacts/``.

The tests after the first share one app on the tiny demo model (loading it and training it
once is most of the time) and run in file order: Evaluate and Chat use the run trained
through the Train tab. ``LAB_BROWSER_STEPS`` sets that run's length (the README's
screenshots come from ``LAB_BROWSER_STEPS=140``, the whole ``cpu_demo`` preset).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fake_openai import FakeOpenAI, answer
from PIL import Image

pytestmark = pytest.mark.browser
expect = pytest.importorskip("playwright.sync_api").expect

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
SAMPLE = REPO / "data" / "sample"
# Without these, Chromium tries Google's hosts at start and its connections are refused.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 900}
TRAIN_STEPS = int(os.environ.get("LAB_BROWSER_STEPS", "30"))
SECRET = "sk-visitor-a-7f3c9e21d0b84a6f"
# Copies every fetch response body (the SSE streams included) as the page reads it, so a test
# can search what the server sent to this page.
RECORD_RESPONSES = """
window.__received = [];
const originalFetch = window.fetch;
window.fetch = async (...args) => {
  const response = await originalFetch(...args);
  try {
    const reader = response.clone().body.getReader();
    const decoder = new TextDecoder();
    (async () => {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        window.__received.push(decoder.decode(value, { stream: true }));
      }
    })().catch(() => {});
  } catch (e) {}
  return response;
};
"""


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return tmp_path_factory.mktemp("browser_workspace")


@pytest.fixture
def lab_home(workspace, monkeypatch):
    """The tests share one app, so they share its workspace (this replaces conftest's per-test one)."""
    monkeypatch.setenv("LAB_HOME", str(workspace))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    return workspace


@pytest.fixture(scope="module")
def demo_app(browser, workspace):
    """The app on the tiny demo model, served on 127.0.0.1 for the whole module."""
    with serve_demo(workspace) as app:
        yield app


@pytest.fixture
def fresh_demo_app(browser, tmp_path):
    """The app on the tiny demo model in a workspace of its own, as a class finds it: nothing trained yet."""
    with serve_demo(tmp_path / "fresh_workspace") as app:
        yield app


@contextmanager
def serve_demo(workspace: Path):
    from lab.training import job as jobs
    from lab.ui import launch
    from lab.ui.context import AppSettings

    with pytest.MonkeyPatch.context() as env:
        env.setenv("LAB_HOME", str(workspace))
        env.delenv("OPENAI_API_KEY", raising=False)
        app, ctx = launch(AppSettings(model="demo"), block=False)
        try:
            _until(lambda: ctx.handle.state.value != "loading", 120, "the demo model")
            assert ctx.handle.state.value == "ready", ctx.handle.describe()
            yield SimpleNamespace(app=app, ctx=ctx, url=app.local_url)
        finally:
            job = jobs.current_job()
            if job is not None and job.active:
                job.stop()
                job.wait(120)
            app.close()


@pytest.fixture(scope="module")
def labeler():
    """A chat-completions server that answers with the sample set's caption of the picture it is shown,
    in Chinese when the prompt is Chinese."""
    captions = {}
    for name, lang in [("data.jsonl", "en"), ("data_caption_zh.jsonl", "zh")]:
        for line in (SAMPLE / name).read_text().splitlines():
            record = json.loads(line)
            captions.setdefault(record["images"][0], {})[lang] = record["messages"][-1]["content"]
    refs = [(_fingerprint(Image.open(SAMPLE / image)), texts) for image, texts in captions.items()]

    def reply(body):
        import base64

        parts = body["messages"][-1]["content"]
        url = next(p["image_url"]["url"] for p in parts if p.get("type") == "image_url")
        prompt = " ".join(p.get("text", "") for p in parts if p.get("type") == "text")
        seen = _fingerprint(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
        texts = min(refs, key=lambda ref: float(np.abs(ref[0] - seen).mean()))[1]
        return answer(texts["zh" if re.search(r"[\u4e00-\u9fff]", prompt) else "en"])

    with FakeOpenAI(responder=reply) as server:
        yield server


def _fingerprint(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("L").resize((16, 16)), dtype=np.float32)


def _until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


@contextmanager
def visitor(browser, url: str, locale: str = "en-US", record: bool = False):
    """A new browser context (one visitor, own cookies and storage) on the app's first page."""
    context = browser.new_context(locale=locale, viewport=VIEWPORT)
    if record:
        context.add_init_script(RECORD_RESPONSES)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url, wait_until="load")  # timers poll, so the network is never idle
    page.get_by_role("tab").first.wait_for(timeout=30_000)
    try:
        yield SimpleNamespace(page=page, errors=errors)
    finally:
        context.close()


def open_tab(page, name: str) -> None:
    tab = page.get_by_role("tab", name=name, exact=True)
    tab.click()
    expect(tab).to_have_attribute("aria-selected", "true")


def field(page, label: str):
    """The visible input labelled ``label`` (several tabs reuse labels; hidden tabs do not count)."""
    return page.get_by_label(label, exact=True).filter(visible=True).first


def block(page, label: str):
    """The visible component block whose title is ``label`` (plots, chatbots, galleries)."""
    title = (
        page.get_by_test_id("block-info")
        .or_(page.get_by_test_id("block-label"))
        .filter(has_text=re.compile(rf"^\s*{re.escape(label)}\s*$"))
    )
    return page.locator(".block", has=title).filter(visible=True).first


def choose(page, label: str, option: str) -> None:
    field(page, label).click()
    page.get_by_role("option", name=option, exact=True).click()


def collapse_guide(page) -> None:
    guide = page.locator("#classroom-guide")
    if guide.get_by_test_id("accordion-content").is_visible():
        guide.locator("button.label-wrap").click()


def shot(page, name: str, top, bottom, max_height: int = 1100) -> Path:
    """Screenshot from ``top``'s upper edge to ``bottom``'s lower edge (at most ``max_height``) into test-artifacts/."""
    ARTIFACTS.mkdir(exist_ok=True)
    scroll = page.evaluate("() => window.scrollY")  # boxes are relative to the viewport, the clip to the page
    y0 = max(top.bounding_box()["y"] + scroll - 12, 0)
    box = bottom.bounding_box()
    y1 = min(box["y"] + box["height"] + scroll + 12, y0 + max_height)
    path = ARTIFACTS / f"{name}.png"
    clip = {"x": 0, "y": y0, "width": VIEWPORT["width"], "height": y1 - y0}
    page.screenshot(path=str(path), full_page=True, clip=clip)
    return path


def drawn_values(plot, series: str = "train") -> list[float]:
    """The values of the points Vega drew for ``series`` (its marks carry them in aria-label)."""
    labels = plot.locator(f'[aria-roledescription="point"][aria-label*=": {series}"]').evaluate_all(
        "marks => marks.map(m => m.getAttribute('aria-label'))"
    )
    # "step: 3; Loss: 7.78; series: train": the middle field is the value, named by the y axis's title.
    values = [re.search(r"^[^;]+; [^:]+: ([-\d.e]+)(;|$)", label) for label in labels]
    assert all(values), labels  # "value: undefined" when the plot took the numbers for categories
    return [float(value.group(1)) for value in values]


# ---------------------------------------------------------------- every tab, both languages


@pytest.mark.parametrize("locale, tab_names", [("en-US", ["Dataset"]), ("zh-CN", ["数据集"])])
def test_every_tab_renders_without_console_errors(browser, launch_app, locale, tab_names):
    from lab.errors import localize
    from lab.text import Msg
    from lab.ui import TABS
    from lab.ui.header import SUBTITLE

    app, ctx, client = launch_app(model="")
    lang = "zh" if locale.startswith("zh") else "en"
    expected = [localize(label, lang) for _, label in TABS]
    assert set(tab_names) <= set(expected)
    with visitor(browser, app.local_url, locale) as v:
        ARTIFACTS.mkdir(exist_ok=True)
        for name in expected:
            open_tab(v.page, name)
            v.page.screenshot(path=str(ARTIFACTS / f"tab-{lang}-{name}.png"))
            if name == localize(dict(TABS)["lab.ui.dataset_tab"], lang):
                # Text the server made before the page existed, and table headers, follow the page too.
                summary = {"en": "60 records · 60 images", "zh": "60 条样本 · 60 张图片"}[lang]
                expect(v.page.get_by_text(re.compile(summary)).first).to_be_visible(timeout=10_000)
                header = {"en": "prompt", "zh": "提问"}[lang]
                expect(v.page.get_by_role("columnheader", name=header, exact=True).first).to_be_visible()
                page_of = localize(Msg("Page {page} of {pages}", page=1, pages=3), lang)
                expect(v.page.get_by_text(page_of, exact=True)).to_be_visible()
                v.page.get_by_role("button", name=localize(Msg("Next ▶"), lang), exact=True).click()
                second = v.page.get_by_text(localize(Msg("Page {page} of {pages}", page=2, pages=3), lang), exact=True)
                expect(second).to_be_visible(timeout=10_000)  # the gallery pages, in the page's language
        assert v.page.get_by_text(localize(SUBTITLE, lang)).is_visible()
        assert not v.errors, v.errors


# ---------------------------------------------------------------- the loop, on one app


def test_training_started_in_the_train_tab_draws_the_loss_curve(browser, demo_app):
    with visitor(browser, demo_app.url) as v:
        page = v.page
        collapse_guide(page)
        open_tab(page, "Train")
        choose(page, "Preset", "cpu_demo")
        expect(field(page, "Model (Hub id, folder, or demo)")).to_have_value("demo")
        field(page, "Max steps (-1: use epochs)").fill(str(TRAIN_STEPS))
        field(page, "Run name (empty: automatic)").fill("classroom")
        page.get_by_role("button", name="Start training").click()
        expect(page.get_by_text("Started classroom.")).to_be_visible(timeout=30_000)

        plot = block(page, "Loss")
        points = plot.locator('[aria-roledescription="point"][aria-label*="series: train"]')
        expect(points.first).to_be_attached(timeout=60_000)  # the live plot, while it trains
        expect(page.locator("#train-status")).to_contain_text("finished", timeout=TRAIN_STEPS * 4_000 + 60_000)
        expect(points).to_have_count(TRAIN_STEPS, timeout=10_000)
        losses = drawn_values(plot)
        assert losses[-1] < 0.7 * losses[0], losses
        lines = plot.locator('[aria-roledescription="line mark"]')
        strokes = lines.evaluate_all("marks => marks.map(m => m.getAttribute('stroke'))")
        assert strokes and all(strokes), strokes  # the lines have a colour: they are visible
        shot(page, "train-loss", page.locator("#train-status"), plot)
        assert not v.errors, v.errors
    assert demo_app.ctx.handle.loaded.adapter == "classroom"


def _ensure_trained(ctx) -> None:
    """Evaluate and Chat want the run of the test above; train it here when that test did not run."""
    from lab.train_config import TrainConfig
    from lab.training import job as jobs

    if ctx.handle.loaded.adapter is None:
        cfg = TrainConfig.from_preset("cpu_demo", [f"max_steps={TRAIN_STEPS}", "run_name=classroom", "eval_steps=1000"])
        job = jobs.start_training(cfg, ctx.handle)
        assert job.wait(600) and job.status == "finished", job.message


def test_evaluate_shows_base_vs_tuned(browser, demo_app):
    _ensure_trained(demo_app.ctx)
    with visitor(browser, demo_app.url) as v:
        page = v.page
        collapse_guide(page)
        open_tab(page, "Evaluate")
        compare = field(page, "Compare with the base model (adapter off, then on)")
        expect(compare).not_to_be_checked()  # off by default, as in the CLI; the guide says to tick it
        compare.check()
        field(page, "Samples (0: all)").fill("8")
        field(page, "number input for Max new tokens").fill("32")
        field(page, "number input for Max new tokens").press("Tab")
        page.get_by_role("button", name="Evaluate", exact=True).click()
        expect(page.get_by_text(re.compile(r"8/8 samples scored"))).to_be_visible(timeout=120_000)
        expect(page.get_by_role("grid", name="Metrics")).to_contain_text("rouge_l")
        chart = block(page, "Base vs fine-tuned")
        expect(chart.locator('[aria-roledescription="bar"]').first).to_be_attached(timeout=10_000)
        shot(page, "evaluate", page.locator(".block", has=page.get_by_role("grid", name="Metrics")), chart)
        assert not v.errors, v.errors


def test_a_chat_message_with_a_sample_image_gets_an_answer(browser, demo_app):
    _ensure_trained(demo_app.ctx)
    with visitor(browser, demo_app.url) as v:
        page = v.page
        collapse_guide(page)
        open_tab(page, "Chat")
        page.get_by_role("button", name="Generation settings").click()
        field(page, "number input for Temperature (0: greedy)").fill("0")
        field(page, "number input for Max new tokens").fill("32")
        field(page, "number input for Max new tokens").press("Tab")
        box = page.locator(".multimodal-textbox").filter(visible=True)
        box.locator("input[type=file]").set_input_files(str(SAMPLE / "images" / "0001.png"))
        expect(box.locator("img").first).to_be_visible(timeout=15_000)  # the upload is in
        box.locator("textarea").fill("Describe this UI component in one sentence.")
        box.get_by_test_id("submit-button").click()
        log = page.get_by_role("log").filter(visible=True)
        expect(log.get_by_test_id("user").first).to_be_visible(timeout=30_000)
        bot = log.get_by_test_id("bot")
        expect(bot).to_have_count(1, timeout=60_000)
        expect(bot.first).to_have_text(re.compile(r"\w"), timeout=60_000)
        _until(lambda: demo_app.ctx.handle.state.value == "ready", 60, "the answer to finish")
        assert bot.first.inner_text().strip()
        shot(page, "chat", page.get_by_role("tablist"), box)
        assert not v.errors, v.errors


def test_a_prompt_preview_shows_the_labelers_answers(browser, demo_app, labeler):
    with visitor(browser, demo_app.url) as v:
        page = v.page
        collapse_guide(page)
        open_tab(page, "Prompt design")
        field(page, "Base URL").fill(labeler.base_url)
        field(page, "API key (kept in this page only)").fill("sk-preview")
        field(page, "Compare with prompt B on the same images").check()
        user_prompts = page.get_by_label("User prompt (<image> marks where the picture goes)", exact=True)
        user_prompts.filter(visible=True).nth(1).fill("<image>用一句话描述这个UI组件。")  # prompt B
        page.get_by_role("button", name="Run preview").click()
        expect(page.get_by_text(re.compile(r"A: 4/4 answered, 4 usable"))).to_be_visible(timeout=60_000)
        expect(page.get_by_text(re.compile(r"B: 4/4 answered, 4 usable"))).to_be_visible()
        gallery_a, gallery_b = block(page, "Answers to A"), block(page, "Answers to B")
        expect(gallery_a.locator("img")).to_have_count(4)
        expect(gallery_a).to_contain_text("A donut chart")
        expect(gallery_b).to_contain_text("一个环形图")
        details = page.get_by_role("grid", name="Details: latency, tokens, cost, JSON validity")
        expect(details).to_contain_text("一个环形图，共3个扇区")
        shot(page, "prompt-design", page.get_by_role("button", name="Run preview"), details)
        assert not v.errors, v.errors


def test_two_visitors_one_trains_the_other_is_told_busy_and_never_sees_the_key(browser, demo_app, labeler, workspace):
    from lab.training import job as jobs

    with visitor(browser, demo_app.url) as a:
        # Visitor A starts a long run, then labels two pictures with its own API key.
        open_tab(a.page, "Train")
        field(a.page, "Max steps (-1: use epochs)").fill("1000")
        field(a.page, "Run name (empty: automatic)").fill("long-run")
        a.page.get_by_role("button", name="Start training").click()
        expect(a.page.get_by_text("Started long-run.")).to_be_visible(timeout=30_000)
        _until(lambda: demo_app.ctx.handle.state.value == "training", 60, "the run to claim the model")
        open_tab(a.page, "Labeling")
        field(a.page, "Base URL").fill(labeler.base_url)
        field(a.page, "API key (kept in this page only)").fill(SECRET)
        field(a.page, "Dataset to write: a name under data/, or a folder").fill("visitor-a")
        field(a.page, "Label at most this many images now (0: all)").fill("2")
        a.page.get_by_role("button", name="Start / resume").click()
        expect(a.page.get_by_text(re.compile(r"finished: 2 labeled"))).to_be_visible(timeout=60_000)
        assert any(r["headers"].get("authorization") == f"Bearer {SECRET}" for r in labeler.requests)

        with visitor(browser, demo_app.url, locale="zh-CN", record=True) as b:
            # Visitor B reads Chinese: the model is busy for chat, said in Chinese by the core;
            # the datasets can still be browsed.
            open_tab(b.page, "对话")
            box = b.page.locator(".multimodal-textbox").filter(visible=True)
            box.locator("textarea").fill("你好？")
            box.get_by_test_id("submit-button").click()
            busy = "模型正忙：训练任务正在使用模型；请等它结束后再试。"
            expect(b.page.get_by_text(busy).first).to_be_visible(timeout=30_000)
            open_tab(b.page, "数据集")
            b.page.get_by_role("button", name="查看", exact=True).click()
            expect(b.page.get_by_text(re.compile(r"60 条样本 · 60 张图片"))).to_be_visible(timeout=30_000)
            expect(block(b.page, "图片").locator("img").first).to_be_visible(timeout=30_000)
            assert block(b.page, "图片").locator("img").count() >= 12
            expect(b.page.get_by_role("columnheader", name="提问", exact=True).first).to_be_visible()  # headers too
            shot(b.page, "two-visitors-b", b.page.get_by_role("tablist"), block(b.page, "图片"))
            # A's key is nowhere in B's page: not in its inputs, its HTML, nor what the server sent it.
            values = b.page.locator("input, textarea").evaluate_all("els => els.map(e => e.value)")
            assert not [value for value in values if SECRET in value]
            assert SECRET not in b.page.content()
            received = "".join(b.page.evaluate("() => window.__received"))
            assert "60 条样本" in received and "模型正忙" in received  # the recording works
            assert SECRET not in received
            assert not b.errors, b.errors

        # ... nor in any file the app wrote.
        for path in workspace.rglob("*"):
            if path.is_file():
                assert SECRET.encode() not in path.read_bytes(), path
        a.page.get_by_role("tab", name="Train", exact=True).click()
        a.page.get_by_role("button", name="Stop (after this step)").click()
        job = jobs.current_job()
        assert job.wait(120) and job.status == "stopped", job.message
        assert not a.errors, a.errors


def test_the_language_switch_changes_the_tab_names(browser, demo_app):
    from lab.errors import localize
    from lab.ui import TABS
    from lab.ui.header import SUBTITLE
    from lab.ui.i18n import head_script

    # Gradio picks its language before it runs scripts given as head=, so the page's own <head> carries
    # the choice: an inline script there runs while the page is parsed, before Gradio's deferred module.
    html = urllib.request.urlopen(demo_app.url).read().decode()
    assert head_script() in html.split("</head>")[0]
    with visitor(browser, demo_app.url, locale="en-US") as v:
        page = v.page
        tabs = page.get_by_role("tab")
        expect(tabs).to_have_text([localize(label, "en") for _, label in TABS])
        # What the person typed and saw stays: the page changes its language in place, it does not reload.
        page.evaluate("() => { window.__same_page = true; }")
        open_tab(page, "Chat")
        box = page.locator(".multimodal-textbox").filter(visible=True).locator("textarea")
        box.fill("half a question")
        page.get_by_role("button", name="中文").click()
        expect(tabs).to_have_text([localize(label, "zh") for _, label in TABS], timeout=30_000)
        expect(page.get_by_text(localize(SUBTITLE, "zh"))).to_be_visible()
        expect(page.locator("#model-status")).to_contain_text("状态", timeout=10_000)  # server-side text follows
        assert page.evaluate("() => window.__same_page") is True
        expect(box).to_have_value("half a question")
        open_tab(page, localize(dict(TABS)["lab.ui.dataset_tab"], "zh"))  # headers made on the server follow too
        expect(page.get_by_role("columnheader", name="提问", exact=True).first).to_be_visible(timeout=10_000)
        page.screenshot(path=str(ARTIFACTS / "language-zh.png"))
        page.get_by_role("button", name="English").click()
        expect(tabs).to_have_text([localize(label, "en") for _, label in TABS], timeout=30_000)
        expect(page.get_by_role("columnheader", name="prompt", exact=True).first).to_be_visible(timeout=10_000)
        assert page.evaluate("() => window.__same_page") is True
        assert not v.errors, v.errors


# ---------------------------------------------------------------- the classroom guide, as written


def tr(text: str, lang: str, context: str | None = None) -> str:
    """A label as a page in ``lang`` shows it (its English is the catalog's key)."""
    from lab.text import catalog

    key = text if context is None else f"{context}\x04{text}"
    return text if lang == "en" else catalog(lang).get(key, text)


def said(template: str, lang: str, cut: str = "<cut>", **values) -> str:
    """The start of a message in ``lang``, up to the value ``cut`` (what follows it varies run by run)."""
    from lab.errors import localize
    from lab.text import Msg

    return localize(Msg(template, **values), lang).split(cut)[0]


@pytest.mark.parametrize("locale", ["en-US", "zh-CN"])
def test_the_classroom_guide_walks_as_written_and_each_step_keeps_its_promise(browser, fresh_demo_app, locale):
    """Each step of lab/ui/guide.py, clicked as it says, in English and in Chinese, on a fresh workspace (the
    whole cpu_demo run: a shorter one does not always beat the base model). The only change: 8 samples to
    evaluate, for the test's time."""
    from lab.errors import localize
    from lab.presets import load_prompt_preset
    from lab.ui import TABS

    lang = "zh" if locale.startswith("zh") else "en"
    tab = {module.rsplit(".", 1)[-1]: localize(label, lang) for module, label in TABS}
    with visitor(browser, fresh_demo_app.url, locale) as v:
        page = v.page
        expect(page.locator("#classroom-guide").get_by_test_id("accordion-content")).to_be_visible()  # open on the demo
        expect(page.locator("#model-status")).to_contain_text(
            tr("tiny random demo model: its answers are noise until you train it", lang)
        )
        _guide_step_1_prompt_design(page, tab, lang, load_prompt_preset("sample_caption").prompt(lang)[1])
        # 2. Dataset: the sample set, 60 components and charts with their captions.
        open_tab(page, tab["dataset_tab"])
        counts = said(
            "{records} records · {images} images · {turns} answers · {languages}",
            lang,
            records=60,
            images=60,
            turns="<cut>",
            languages="",
        )
        expect(page.get_by_text(counts).first).to_be_visible(timeout=30_000)
        run = _guide_step_3_train(page, tab, lang)
        _guide_step_4_evaluate(page, tab, lang)
        _guide_step_5_chat(page, tab, lang, lambda: fresh_demo_app.ctx.handle.state.value == "ready")
        # 6. Export: the run merged into a complete model folder, with its vllm serve command.
        open_tab(page, tab["export_tab"])
        expect(field(page, tr("Training run", lang))).to_have_value(run, timeout=10_000)  # the newest, preselected
        page.get_by_role("button", name=tr("Merge and export", lang)).click()
        expect(block(page, tr("Serve with vLLM", lang))).to_contain_text("vllm serve", timeout=120_000)
        expect(block(page, tr("Serve with vLLM", lang))).to_contain_text(f"{run}-merged")
        # A refusal in a pop-up is titled in the page's language too.
        page.get_by_role("button", name=tr("Model: load, pick the adapter, unload", lang)).click()
        field(page, tr("Training run (its base model + adapter)", lang)).fill("no-such-run")
        field(page, tr("Training run (its base model + adapter)", lang)).press("Enter")
        page.get_by_role("button", name=tr("Load run", lang), exact=True).click()
        toast = page.get_by_test_id("toast-body").first
        expect(toast).to_contain_text(tr("Error", lang), timeout=10_000)
        expect(toast).to_contain_text("no-such-run")
        shot(page, f"guide-{lang}", page.get_by_role("tablist"), block(page, tr("Serve with vLLM", lang)))
        assert not [e for e in v.errors if "no-such-run" not in e], v.errors


def _guide_step_1_prompt_design(page, tab: dict, lang: str, user_prompt: str) -> None:
    """Keep sample_caption and the sample images, choose the local model, Run preview: answers one by one,
    nonsense cut off at the limit."""
    open_tab(page, tab["prompt_tab"])
    expect(field(page, tr("Prompt preset", lang))).to_have_value("sample_caption")
    user = tr("User prompt (<image> marks where the picture goes)", lang)
    expect(field(page, user)).to_have_value(user_prompt, timeout=10_000)  # a Chinese page asks in Chinese
    local = tr("Local model loaded in the app (free, offline, slower)", lang)
    choose(page, tr("Provider", lang), local)
    base_url = page.get_by_label(tr("Base URL", lang), exact=True).filter(visible=True)
    expect(base_url).to_have_count(0, timeout=10_000)  # no URL, model or key for the local model
    expect(page.get_by_role("button", name=tr("Use the loaded local model instead", lang))).to_be_hidden()
    page.get_by_role("button", name=tr("Run preview", lang)).click()
    answering = said("Answering… {done} of {total} answers so far.", lang, done="<cut>", total=4)
    expect(page.get_by_text(re.compile(re.escape(answering) + r"[123]\D")).first).to_be_visible(timeout=120_000)
    summary = said(
        "{name}: {answered}/{total} answered, {usable} usable · {seconds:.2f} s each · {prompt_tokens} + "
        "{completion_tokens} tokens · ${cost:.4f}",
        lang,
        name="A",
        answered=4,
        total=4,
        usable="<cut>",
        seconds=0,
        prompt_tokens=0,
        completion_tokens=0,
        cost=0,
    )
    expect(page.get_by_text(summary).first).to_be_visible(timeout=300_000)
    gallery = block(page, tr("Answers to A", lang))
    expect(gallery.locator("img")).to_have_count(4)
    cut_off = tr("answer cut off at the max tokens limit", lang)
    captions = gallery.locator(".caption-label").all_inner_texts()
    assert len(captions) == 4 and all(c.replace(f"[{cut_off}]", "").strip() for c in captions), captions
    assert tr("empty answer", lang) not in gallery.inner_text()
    # The labeler chosen here is the one the Labeling tab starts with.
    open_tab(page, tab["labeling_tab"])
    expect(field(page, tr("Provider", lang))).to_have_value(local, timeout=10_000)
    expect(page.get_by_label(tr("Base URL", lang), exact=True).filter(visible=True)).to_have_count(0)


def _guide_step_3_train(page, tab: dict, lang: str) -> str:
    """Preset cpu_demo, Start training: the loss falls on the plot, from about 8 to under 1. Returns the run's
    name."""
    from lab.errors import localize
    from lab.jobs import JobState
    from lab.ui.train_progress import SERIES

    open_tab(page, tab["train_tab"])
    choose(page, tr("Preset", lang), "cpu_demo")
    page.get_by_role("button", name=tr("Start training", lang)).click()
    started = page.get_by_text(re.compile(re.escape(said("Started {name}.", lang, name="<cut>")) + r"\S+"))
    expect(started.first).to_be_visible(timeout=30_000)
    name = re.search(
        re.escape(said("Started {name}.", lang, name="<cut>")) + r"(\S+?)[.。]$", started.first.inner_text()
    )
    status = page.locator("#train-status")
    expect(status).to_contain_text(localize(JobState.FINISHED.label, lang), timeout=900_000)
    losses = drawn_values(block(page, tr("Loss", lang)), localize(SERIES["train"], lang))
    assert len(losses) > 10 and losses[-1] < 0.3 * losses[0], losses  # from about 8 to under 1
    return name.group(1)


def _guide_step_4_evaluate(page, tab: dict, lang: str) -> None:
    """data/sample, Compare with the base model, Evaluate: the fine-tuned model scores above the base."""
    open_tab(page, tab["eval_tab"])
    expect(field(page, tr("Data to evaluate on", lang))).to_have_value(str(SAMPLE))
    field(page, tr("Compare with the base model (adapter off, then on)", lang)).check()
    field(page, tr("Samples (0: all)", lang)).fill("8")
    field(page, tr("Samples (0: all)", lang)).press("Tab")
    page.get_by_role("button", name=tr("Evaluate", lang, context="button"), exact=True).click()
    scored = said(
        "{scored}/{total} samples scored in {seconds:.1f} s ({rate:g} samples/s)",
        lang,
        cut="12345.6",
        scored=8,
        total=8,
        seconds=12345.6,
        rate=1,
    )
    expect(page.get_by_text(scored).first).to_be_visible(timeout=300_000)
    row = page.get_by_role("grid", name=tr("Metrics", lang)).get_by_role("row").filter(has_text="rouge_l").first

    def scores():  # (base, tuned), once the table holds both passes' results
        values = [float(x) for x in re.findall(r"-?\d+(?:\.\d+)?", row.inner_text())[:2]]
        return values if len(values) == 2 and values[1] > 0 else None

    base, tuned = _until(scores, 60, "the fine-tuned model's scores")
    assert tuned > base, row.inner_text()  # the fine-tuned model above the base model


def _guide_step_5_chat(page, tab: dict, lang: str, ready) -> None:
    """A sample picture and the question: an answer; with the adapter unticked, the base model's."""
    open_tab(page, tab["chat_tab"])
    box = page.locator(".multimodal-textbox").filter(visible=True)
    log = page.get_by_role("log").filter(visible=True)
    answers = []
    for adapter in (True, False):
        field(page, tr("Answer with the fine-tuned adapter", lang)).set_checked(adapter)
        if adapter:  # the picture stays in the conversation: the second question is about it too
            box.locator("input[type=file]").set_input_files(str(SAMPLE / "images" / "0001.png"))
            expect(box.locator("img").first).to_be_visible(timeout=15_000)
        box.locator("textarea").fill("Describe this UI component in one sentence.")
        box.get_by_test_id("submit-button").click()
        expect(log.get_by_test_id("bot")).to_have_count(len(answers) + 1, timeout=120_000)
        time.sleep(0.5)
        _until(ready, 300, "the answer to finish")
        time.sleep(1.0)  # its last words reach the page
        answers.append(log.get_by_test_id("bot").all_inner_texts()[len(answers)])  # no wait on a re-drawn message
    assert answers[0].strip() and answers[0] != answers[1], answers
