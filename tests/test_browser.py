"""A real browser (Debian's Chromium driven by Playwright) renders every tab in English and Chinese."""

import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
# Without these, Chromium tries Google's hosts at start and its connections are refused.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.mark.parametrize("locale, tab_names", [("en-US", ["Dataset"]), ("zh-CN", ["数据集"])])
def test_every_tab_renders_without_console_errors(browser, launch_app, locale, tab_names):
    from lab.ui import TABS
    from lab.ui.i18n import text

    app, ctx, client = launch_app(model="")
    lang = "zh" if locale.startswith("zh") else "en"
    expected = [text(label, lang) for _, label in TABS]
    assert set(tab_names) <= set(expected)
    page = browser.new_page(locale=locale, viewport={"width": 1400, "height": 1000})
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(app.local_url, wait_until="load")  # timers poll, so the network is never idle
    page.get_by_role("tab", name=expected[0]).wait_for(timeout=30_000)
    ARTIFACTS.mkdir(exist_ok=True)
    for name in expected:
        tab = page.get_by_role("tab", name=name)
        tab.click()
        page.wait_for_timeout(300)
        assert tab.get_attribute("aria-selected") == "true"
        page.screenshot(path=str(ARTIFACTS / f"tab-{lang}-{name}.png"))
    assert page.get_by_text(text("app.subtitle", lang)).is_visible()
    assert not errors, errors
    page.close()
