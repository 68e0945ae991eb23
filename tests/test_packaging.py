"""What a fresh machine and a Hugging Face Space install stays in step."""

import re
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_requirements_txt_matches_pyproject():
    lines = [
        line.strip()
        for line in (ROOT / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
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


def _pins() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            assert pinned and re.fullmatch(r"[0-9][0-9A-Za-z.]*", pinned), f"not an exact pin: {line}"
            pins[canonicalize_name(name)] = pinned
    return pins


def test_the_constraints_pin_every_direct_dependency_at_a_version_its_bound_allows():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name
    from packaging.version import Version

    project = _pyproject()["project"]
    pins = _pins()
    extras = project["optional-dependencies"]
    for spec in project["dependencies"] + [spec for group in extras.values() for spec in group]:
        requirement = Requirement(spec)
        name = canonicalize_name(requirement.name)
        if name == canonicalize_name(project["name"]):
            continue  # the test extra asks for another extra of the project itself
        assert name in pins, f"{requirement.name} is not pinned in constraints.txt"
        assert requirement.specifier.contains(Version(pins[name])), f"{name}=={pins[name]} breaks {spec}"


def test_the_readme_and_ci_install_with_the_constraints():
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[test]" -c constraints.txt && python -m pytest' in readme
    assert 'pip install -e ".[test]" -c constraints.txt && python -m pytest' in ci
    assert "--index-url https://download.pytorch.org/whl/cpu -c constraints.txt" in readme  # a laptop's CPU build
