"""Where things live.

The workspace holds ``data/`` (datasets), ``checkpoints/`` (training runs) and
``models/`` (the offline demo model and other local models). It defaults to the
repository checkout, so the bundled sample data is found without configuration, and is
overridable with ``LAB_HOME`` (tests point it at a tmp dir; a Hugging Face Space points
it at its persistent ``/data`` volume).
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
PRESETS_DIR = REPO_ROOT / "presets"
SAMPLE_DATASET = REPO_ROOT / "data" / "sample"


def workspace() -> Path:
    env = os.environ.get("LAB_HOME")
    if env:
        return Path(env).expanduser().resolve()
    if os.environ.get("SPACE_ID") and Path("/data").is_dir():
        return Path("/data/vlm-lab")
    return REPO_ROOT


def datasets_dir() -> Path:
    return workspace() / "data"


def runs_dir() -> Path:
    return workspace() / "checkpoints"


def models_dir() -> Path:
    return workspace() / "models"


def demo_model_dir(family: str = "qwen2_5_vl") -> Path:
    """Folder of the tiny random demo model of ``family`` (built on first use)."""
    return models_dir() / f"tiny-{family}"
