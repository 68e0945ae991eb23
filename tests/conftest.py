"""Shared fixtures.

Every test runs with ``LAB_HOME`` pointing at a fresh tmp dir, so nothing writes into
the checkout. Tiny random models are built once per test session and per family.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from lab.families import tiny_families

pytest_plugins = ["lora_run"]  # the trained-run fixtures (lora_run_dir, family_run) for every test module

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parent.parent
SAMPLE = REPO / "data" / "sample"

# Every family of the table has a tiny stand-in; the family tests run over all of them. The Qwen-VL
# families are the quick set; the others are marked slow where a test trains or exports.
FAMILIES = list(tiny_families())
QUICK_FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl")


def families(slow_beyond=QUICK_FAMILIES):
    """``FAMILIES`` as pytest parameters, those not in ``slow_beyond`` marked slow."""
    return [pytest.param(f, marks=() if f in slow_beyond else pytest.mark.slow) for f in FAMILIES]


@pytest.fixture(autouse=True)
def lab_home(tmp_path, monkeypatch):
    home = tmp_path / "lab_home"
    home.mkdir()
    monkeypatch.setenv("LAB_HOME", str(home))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("LAB_LANG", "en")  # CLI messages follow the locale otherwise
    return home


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """``tiny_models(family) -> Path``: a tiny random model folder, built once per session."""
    from lab.tiny import build_tiny_model

    root = tmp_path_factory.mktemp("tiny_models")
    built: dict[str, Path] = {}

    def get(family: str = "qwen2_5_vl") -> Path:
        if family not in built:
            built[family] = build_tiny_model(family, root / family)
        return built[family]

    return get


@pytest.fixture(scope="module")
def loaded(tiny_models):
    """``loaded(family) -> LoadedModel``: a tiny model loaded on the CPU, once per test module."""
    from lab.models import load_model

    cache = {}

    def get(family):
        if family not in cache:
            cache[family] = load_model(tiny_models(family), device="cpu")
        return cache[family]

    return get


@pytest.fixture(scope="session")
def sample_dataset() -> Path:
    return SAMPLE


@pytest.fixture
def launch_app():
    """``launch_app(model="") -> (app, ctx, client)``: the real app served on 127.0.0.1.

    ``model`` is loaded at start as in ``python app.py --model``; wait for it with
    ``ctx.handle``. Every app started here is closed after the test.
    """
    from gradio_client import Client

    from lab.ui import launch
    from lab.ui.context import AppSettings

    started = []

    def start(model: str = "", **settings):
        app, ctx = launch(AppSettings(model=model, **settings), block=False)
        started.append(app)
        return app, ctx, Client(app.local_url, verbose=False)

    yield start
    for app in started:
        app.close()
