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
from urllib.parse import unquote, urlsplit

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


def allowed_roots() -> tuple[Path, ...]:
    """What a shared deployment may read and write: the workspace and the checkout's bundled data."""
    return tuple(root.resolve() for root in (workspace(), REPO_ROOT / "data", PRESETS_DIR))


def check_allowed(path: str | Path, write: bool = False) -> Path:
    """The one path guard: on a shared deployment, refuse any path outside :func:`allowed_roots`.

    Every place where a person's path, name or URL meets the file system calls this (or
    :func:`under`, :func:`is_allowed`) before it looks at anything, so every tab and command
    is covered. A ``file://`` URL stands for the path it names. In restricted mode the path
    is resolved (``..`` and symlinks followed, also in its percent-decoded form) and the
    resolved path is returned; what is outside is refused with one sentence that is the
    same whether it exists or not. ``write`` means the caller will write there: then only
    the workspace will do, the bundled data every visitor shares stays as it is. Elsewhere
    (a person's own machine) the path is returned as given: paths anywhere are fine.
    """
    given = _local_path(path)
    if not restricted():
        return given
    full = _inside_or_refused(given, write)
    decoded = unquote(str(given))
    if decoded != str(given):  # a later step that decodes '%2e%2e%2f' must not find a way out either
        _inside_or_refused(Path(decoded), write)
    return full


def under(folder: str | Path, name: str, write: bool = False) -> Path:
    """``folder/name`` for a name a person gave (a dataset, a run), through :func:`check_allowed`.

    So a symlink in ``folder`` that leads out of the workspace, or a name with ``..``, is
    refused like any other path.
    """
    return check_allowed(Path(folder) / name, write)


def is_allowed(path: str | Path) -> bool:
    """Whether :func:`check_allowed` lets ``path`` through (for listings, which skip what it refuses)."""
    from lab.errors import LabError

    try:
        check_allowed(path)
    except LabError:
        return False
    return True


def _local_path(path: str | Path) -> Path:
    text = os.fspath(path)
    if text.startswith("file:"):
        url = urlsplit(text)
        if url.netloc in ("", "localhost"):
            return Path(unquote(url.path))
    return Path(text)


def _inside_or_refused(path: Path, write: bool) -> Path:
    from lab.errors import LabError

    try:
        full = path.expanduser().resolve()
    except (OSError, RuntimeError, ValueError):  # a NUL byte, a symlink loop, an unknown ~user
        full = None
    roots = allowed_roots()
    if full is None or not any(full.is_relative_to(root) for root in roots):
        raise LabError("On this shared server only the workspace's own files can be used; upload yours instead.")
    if write and not full.is_relative_to(roots[0]):
        raise LabError("The bundled files cannot be changed on this shared server; work on a copy in your workspace.")
    return full


def resolve(path: str | Path) -> Path:
    """Find a relative dataset/run/model path the way a person means it.

    Tried in order: as given (relative to the current folder), under the workspace,
    under the checkout (where the bundled ``data/sample`` lives). The first that
    exists wins; if none does, the path under the workspace is returned so the error
    names where it was looked for. On a shared deployment only the places that
    :func:`check_allowed` lets through are tried, and that is decided before any of them
    is looked at, so what is found never tells anything about the rest of the server.
    """
    given = _local_path(path).expanduser()
    candidates = [given] if given.is_absolute() else [given, workspace() / given, REPO_ROOT / given]
    usable = [candidate for candidate in candidates if is_allowed(candidate)]
    if not usable:
        check_allowed(given)  # raises: none of them may be used
    found = next((candidate for candidate in usable if candidate.exists()), None)
    default = workspace() / given
    return check_allowed(found or (default if default in usable else usable[0])).resolve()
