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


def restricted() -> bool:
    """On a shared deployment (a Hugging Face Space) visitors may not browse the server's files."""
    return bool(os.environ.get("SPACE_ID")) or os.environ.get("LAB_RESTRICT_PATHS") == "1"


def check_allowed(path: str | Path) -> Path:
    """In restricted mode, refuse any path outside the workspace and the bundled data.

    The core calls this where a person's path meets the file system (datasets, image
    folders, model and run folders, export targets), so every tab and command is covered.
    """
    path = Path(path)
    if not restricted():
        return path
    allowed = (workspace(), REPO_ROOT / "data", PRESETS_DIR)
    full = path.expanduser().resolve()
    if ".." in path.parts or not any(full.is_relative_to(root) for root in allowed):
        from lab.errors import LabError

        raise LabError("On this shared server only the workspace's own files can be used; upload yours instead.")
    return path


def resolve(path: str | Path) -> Path:
    """Find a relative dataset/run/model path the way a person means it.

    Tried in order: as given (relative to the current folder), under the workspace,
    under the checkout (where the bundled ``data/sample`` lives). The first that
    exists wins; if none does, the path under the workspace is returned so the error
    names where it was looked for.
    """
    given = Path(path).expanduser()
    if ".." in given.parts:
        check_allowed(given)  # refused in restricted mode; elsewhere resolved as usual
    if given.is_absolute() or given.exists():
        return check_allowed(given.resolve())
    for root in (workspace(), REPO_ROOT):
        candidate = root / given
        if candidate.exists():
            return check_allowed(candidate.resolve())
    return check_allowed((workspace() / given).resolve())
