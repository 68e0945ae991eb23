"""What a fresh machine and a Hugging Face Space install stays in step."""

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_requirements_txt_matches_pyproject():
    lines = [l.strip() for l in (ROOT / "requirements.txt").read_text().splitlines() if l.strip() and not l.startswith("#")]
    assert lines == _pyproject()["project"]["dependencies"]


def test_installed_versions_meet_the_lower_bounds():
    for spec in _pyproject()["project"]["dependencies"]:
        name, low = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[a-z0-9,]+\])?>=([0-9.]+)", spec).groups()
        installed = tuple(int(x) for x in re.findall(r"\d+", version(name))[:3])
        wanted = tuple(int(x) for x in low.split("."))
        assert installed[: len(wanted)] >= wanted, f"{name} {version(name)} < {low}"


def test_space_front_matter_names_the_app():
    readme = (ROOT / "README.md").read_text()
    front = readme.split("---")[1]
    assert "sdk: gradio" in front and "app_file: app.py" in front
    sdk = re.search(r"sdk_version: ([0-9.]+)", front).group(1)
    assert f"gradio>={sdk.removesuffix('.0')}" in _pyproject()["project"]["dependencies"]
