"""Relative paths are found where a person means them; a shared Space cannot browse the server."""

import pytest

from lab import paths
from lab.errors import LabError


def test_resolve_finds_the_bundled_sample_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert paths.resolve("data/sample") == paths.SAMPLE_DATASET


def test_resolve_prefers_the_workspace(lab_home, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (lab_home / "data" / "mine").mkdir(parents=True)
    assert paths.resolve("data/mine") == lab_home / "data" / "mine"
    assert paths.resolve("data/missing") == lab_home / "data" / "missing"


def test_restricted_mode_refuses_server_paths(lab_home, monkeypatch):
    monkeypatch.setenv("SPACE_ID", "someone/vlm-lab")
    assert paths.resolve("data/sample") == paths.SAMPLE_DATASET
    (lab_home / "data" / "mine").mkdir(parents=True)
    assert paths.resolve(lab_home / "data" / "mine") == lab_home / "data" / "mine"
    for bad in ["/etc", "/etc/passwd", "data/../../../etc", str(lab_home / ".." / "x")]:
        with pytest.raises(LabError, match="upload yours instead"):
            paths.resolve(bad)


def test_space_workspace_uses_persistent_storage_when_mounted(monkeypatch, tmp_path):
    monkeypatch.delenv("LAB_HOME")
    monkeypatch.setenv("SPACE_ID", "someone/vlm-lab")
    expected = paths.Path("/data/vlm-lab") if paths.Path("/data").is_dir() else paths.REPO_ROOT
    assert paths.workspace() == expected


def test_restricted_mode_reaches_every_way_in(lab_home, monkeypatch, tmp_path):
    """Datasets, image folders, model folders, runs and export targets outside the workspace are refused."""
    from lab.dataset_check import validate_dataset
    from lab.export import export_run
    from lab.handle import find_run
    from lab.images import list_images
    from lab.models import load_model

    outside = tmp_path / "outside"
    (outside / "model").mkdir(parents=True)
    (outside / "model" / "config.json").write_text("{}")
    monkeypatch.setenv("SPACE_ID", "someone/vlm-lab")
    for call in (
        lambda: validate_dataset(outside),
        lambda: list_images(outside),
        lambda: find_run(outside),
        lambda: export_run(outside, outside / "merged"),
    ):
        with pytest.raises(LabError, match="upload yours instead"):
            call()
    with pytest.raises(LabError, match="only these models can be loaded"):
        load_model(outside / "model")
    assert len(list_images(paths.SAMPLE_DATASET / "images")) == 60
