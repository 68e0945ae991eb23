"""Which models may be loaded, and from where: a Hub id or a model folder, checked by name alone.

On a shared deployment visitors choose what loads, so only the owner's allow-list
(``LAB_ALLOWED_MODELS``) and model folders inside the workspace pass, and models that run their
own Python code are refused. The model pickers offer the same list.
"""

from __future__ import annotations

import re
from pathlib import Path

from lab.errors import LabError, ModelLoadError
from lab.paths import check_allowed, resolve, restricted
from lab.text import Msg, join


def check_trust(trust_remote_code: bool) -> None:
    """Refuse a model's own Python code on a shared deployment, where visitors choose what loads."""
    if trust_remote_code and restricted():
        raise ModelLoadError(
            "Models that run their own Python code (trust_remote_code) cannot be loaded on this shared server."
        )


_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?")


def check_model_source(name_or_path: str | Path) -> None:
    """Refuse at once what :func:`load_model` would refuse by name alone (nothing is loaded or downloaded)."""
    resolve_source(name_or_path)


def resolve_source(name_or_path: str | Path) -> tuple[str, bool]:
    """``(source, is_local)``: a checked local folder, or a name that can only be a Hub id."""
    name = str(name_or_path).strip()
    if not name:
        raise ModelLoadError("No model given: pass a Hub id like Qwen/Qwen2.5-VL-3B-Instruct or a local folder path.")
    if restricted():
        return _allowed_source(name)
    path = Path(name).expanduser()
    if not _HUB_ID.fullmatch(name) or name.startswith(".") or ".." in name:
        path = check_allowed(path)  # surely a path: on a shared server refused before it is looked at
    if path.exists():
        check_allowed(path)
        if not path.is_dir():
            raise ModelLoadError(
                "{path} is a file, not a model folder; pass the folder that holds config.json.", path=path
            )
        if not (path / "config.json").is_file():
            raise ModelLoadError("{path} is not a model folder: it has no config.json.", path=path)
        return str(path.resolve()), True
    if _HUB_ID.fullmatch(name) and not name.startswith("."):
        return name, False
    raise ModelLoadError("Model folder {name} does not exist.", name=name)


ALLOWED_MODELS_ENV = "LAB_ALLOWED_MODELS"


def allowed_models() -> list[str]:
    """The Hub models visitors of a shared deployment may load.

    ``LAB_ALLOWED_MODELS`` (comma-separated Hub ids; ``demo`` is the tiny demo model) when the
    owner sets it; else the demo model and every model a training preset names.
    """
    import os

    from lab.train_config import list_train_presets, train_preset_path

    listed = os.environ.get(ALLOWED_MODELS_ENV)
    if listed is not None:
        return [name.strip() for name in listed.split(",") if name.strip()]
    import yaml

    names = ["demo"]
    for preset in list_train_presets():
        model = (yaml.safe_load(train_preset_path(preset).read_text(encoding="utf-8")) or {}).get("model")
        if model and str(model) not in names:
            names.append(str(model))
    return names


def offered_models(started: str | None = None) -> list[tuple[str, str]]:
    """The model pickers' choices as ``(label, name)``: the allow-list, and elsewhere than on a shared
    deployment every family's presets, each labelled with its size; ``started`` (the app's model) first."""
    from lab.families import picker_choices, preset_models

    names = allowed_models()
    if not restricted():
        names += [hub_id for hub_id, _, _ in preset_models() if hub_id not in names]
    if started and started not in names:
        names = [started, *names]
    return picker_choices(names)


def _allowed_source(name: str) -> tuple[str, bool]:
    """On a shared deployment: an allowed Hub id, or a model folder inside the workspace; nothing else.

    A visitor's name is never tried as a download, and the refusal is the same whether or not
    a folder of that name exists outside the workspace.
    """
    allowed = allowed_models()
    refusal = ModelLoadError(
        "On this shared server only these models can be loaded: {allowed} "
        "(the owner lists them in {allowed_models_env}), or a model trained or exported here.",
        allowed=join(Msg(", "), allowed) or Msg("none"),
        allowed_models_env=ALLOWED_MODELS_ENV,
    )
    try:
        path = resolve(name)
    except LabError:
        path = None
    if path is not None and path.is_dir() and (path / "config.json").is_file():
        return str(path), True
    if name in allowed and _HUB_ID.fullmatch(name):
        return name, False
    raise refusal
