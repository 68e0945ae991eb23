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


def resolve(path: str | Path) -> Path:
    """Find a relative dataset/run/model path the way a person means it.

    Tried in order: as given (relative to the current folder), under the workspace,
    under the checkout (where the bundled ``data/sample`` lives). The first that
    exists wins; if none does, the path under the workspace is returned so the error
    names where it was looked for.
    """
    path = Path(path).expanduser()
    if path.is_absolute() or path.exists():
        return path.resolve()
    for root in (workspace(), REPO_ROOT):
        candidate = root / path
        if candidate.exists():
            return candidate.resolve()
    return (workspace() / path).resolve()
