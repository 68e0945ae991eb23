"""Relative paths are found where a person means them; a shared Space cannot browse the server."""

import pytest

from lab import paths
from lab.errors import LabError, localize


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
    from lab.images import list_images
    from lab.models import load_model
    from lab.training.runs import find_run

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


REFUSED = "only the workspace's own files can be used"


@pytest.fixture
def outside(tmp_path):
    """A folder next to the workspace with a secret file in it, and a path beside it that does not exist."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("CANARY")
    return folder


def refusal(path) -> LabError:
    with pytest.raises(LabError) as caught:
        paths.check_allowed(path)
    return caught.value


def test_guard_refuses_absolute_dotdot_encoded_and_file_url_paths(lab_home, outside, monkeypatch):
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    secret = outside / "secret.txt"
    for bad in [
        secret,
        str(secret),
        "/etc/passwd",
        lab_home / ".." / "outside" / "secret.txt",
        f"{lab_home}/data/../../outside/secret.txt",
        f"{lab_home}/..%2foutside%2fsecret.txt",
        f"{lab_home}/%2e%2e/outside/secret.txt",
        f"file://{secret}",
        f"file://localhost{secret}",
        "~/.ssh/id_rsa",
        f"{lab_home}/a\0b",
    ]:
        assert REFUSED in str(refusal(bad)), bad


def test_guard_follows_symlinks_out_of_the_workspace(lab_home, outside, monkeypatch):
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    (lab_home / "data").mkdir()
    (lab_home / "data" / "link").symlink_to(outside)
    (lab_home / "data" / "file_link.png").symlink_to(outside / "secret.txt")
    for bad in [
        lab_home / "data" / "link",
        lab_home / "data" / "link" / "secret.txt",
        lab_home / "data" / "file_link.png",
    ]:
        refusal(bad)
    with pytest.raises(LabError, match=REFUSED):
        paths.under(paths.datasets_dir(), "link")
    assert not paths.is_allowed(lab_home / "data" / "link") and paths.is_allowed(lab_home / "data")


def test_refusal_does_not_tell_whether_the_outside_path_exists(lab_home, outside, monkeypatch):
    """A file, a folder, a missing path and a dangling link out all get the very same sentence, in both languages."""
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    (lab_home / "data").mkdir()
    (lab_home / "data" / "dangling").symlink_to(outside / "gone")
    errors = [
        refusal(p)
        for p in (
            outside / "secret.txt",
            outside,
            outside / "gone",
            outside / "gone" / "deeper",
            lab_home / "data" / "dangling",
        )
    ]
    assert len({(str(e), localize(e, "zh")) for e in errors}) == 1
    assert "outside" not in str(errors[0]) and localize(errors[0], "zh") != str(errors[0])
    for find in (paths.resolve, lambda p: paths.under(lab_home, p)):
        assert str(pytest.raises(LabError, find, "../outside/secret.txt").value) == str(errors[0])
        assert str(pytest.raises(LabError, find, "../outside/gone").value) == str(errors[0])


def test_guard_returns_the_resolved_path_inside(lab_home, monkeypatch):
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    (lab_home / "data" / "real").mkdir(parents=True)
    (lab_home / "data" / "alias").symlink_to(lab_home / "data" / "real")
    assert paths.check_allowed(lab_home / "data" / "alias") == lab_home / "data" / "real"
    assert paths.check_allowed(f"{lab_home}/data/x/../real") == lab_home / "data" / "real"
    assert paths.check_allowed(f"file://{lab_home}/data/real") == lab_home / "data" / "real"
    assert paths.check_allowed(paths.SAMPLE_DATASET / "images") == paths.SAMPLE_DATASET / "images"
    assert paths.check_allowed(paths.PRESETS_DIR / "train" / "lora.yaml") == paths.PRESETS_DIR / "train" / "lora.yaml"
    with pytest.raises(LabError, match=REFUSED):  # the checkout's code is not bundled data
        paths.check_allowed(paths.REPO_ROOT / "lab" / "paths.py")


def test_unrestricted_mode_leaves_paths_alone(lab_home, outside, monkeypatch):
    """On a person's own machine every path is theirs to use; the guard hands it back as given."""
    monkeypatch.delenv("SPACE_ID", raising=False)
    monkeypatch.delenv("LAB_RESTRICT_PATHS", raising=False)
    (lab_home / "data").mkdir()
    (lab_home / "data" / "link").symlink_to(outside)
    for given in [outside / "secret.txt", "../x", "/etc/passwd", lab_home / "data" / "link"]:
        assert paths.check_allowed(given) == paths.Path(given)
        assert paths.is_allowed(given)
    assert paths.resolve(outside / "secret.txt") == outside / "secret.txt"
    assert paths.under(paths.datasets_dir(), "link") == lab_home / "data" / "link"


def test_a_run_is_found_by_name_on_a_shared_server_but_not_through_a_link_out(lab_home, outside, monkeypatch):
    from lab.training.runs import find_run

    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    (lab_home / "checkpoints" / "mine").mkdir(parents=True)
    (lab_home / "checkpoints" / "link").symlink_to(outside)
    assert find_run("mine") == lab_home / "checkpoints" / "mine"
    assert find_run("checkpoints/mine") == lab_home / "checkpoints" / "mine"
    for bad in ("link", "checkpoints/link", str(outside), "../outside"):
        with pytest.raises(LabError, match=REFUSED):
            find_run(bad)


def test_listings_skip_what_links_out_of_the_workspace(lab_home, outside, monkeypatch):
    """Dataset, run, preset and result lists never show (or read) a link that leads out of the workspace."""
    from lab.dataset import latest_dataset, list_datasets
    from lab.evaluation.runner import list_results
    from lab.presets import list_prompt_presets
    from lab.training.runs import list_runs

    for name in ("data.jsonl", "config.yaml", "link.yaml", "link.json"):
        (outside / name).write_text("{}\n")
    for folder, name in [
        ("data", "link"),
        ("checkpoints", "link"),
        ("presets/prompts", "link.yaml"),
        ("eval", "link.json"),
    ]:
        (lab_home / folder).mkdir(parents=True)
        (lab_home / folder / name).symlink_to(outside / name if "." in name else outside)
    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    assert all("link" not in str(p) for p in list_datasets(include_variants=True)) and latest_dataset() is None
    assert list_runs() == [] and "link" not in list_prompt_presets() and list_results(lab_home / "eval") == []
    monkeypatch.delenv("LAB_RESTRICT_PATHS")
    assert latest_dataset() == lab_home / "data" / "link" and "link" in list_prompt_presets()


def test_bundled_data_can_be_read_but_not_changed_on_a_shared_server(lab_home, monkeypatch):
    """Every visitor shares the checkout's data/ and presets/: a split, a review or an export into them is refused."""
    from lab.dataset import load_records, write_split

    monkeypatch.setenv("LAB_RESTRICT_PATHS", "1")
    assert load_records(paths.SAMPLE_DATASET)
    with pytest.raises(LabError, match="bundled files cannot be changed") as caught:
        write_split(paths.SAMPLE_DATASET, 0.2)
    assert localize(caught.value, "zh") != str(caught.value)
    assert not (paths.SAMPLE_DATASET / "train.jsonl").exists()
    with pytest.raises(LabError, match=REFUSED):  # outside everything: the usual sentence
        paths.check_allowed("/etc/x", write=True)
    assert paths.check_allowed(lab_home / "data" / "new", write=True) == lab_home / "data" / "new"
