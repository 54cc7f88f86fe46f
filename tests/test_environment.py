"""environment.yml (for conda users) must ask for everything pyproject.toml asks for, with the same floors."""

import re
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
CONDA_NAMES = {"torch": {"pytorch", "pytorch-cpu", "pytorch-gpu"}, "simpleitk": {"simpleitk"}}


def _split(requirement: str) -> tuple[str, str]:
    name, spec = re.match(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*)$", requirement).groups()
    return name.lower(), spec.replace(" ", "")


def _conda_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    return dict(_split(dep) for dep in env["dependencies"] if isinstance(dep, str))


def test_every_runtime_dependency_is_in_environment_yml_with_the_same_floor():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    conda = _conda_requirements()
    for requirement in pyproject["project"]["dependencies"]:
        name, spec = _split(requirement)
        candidates = CONDA_NAMES.get(name, {name})
        found = [c for c in candidates if c in conda]
        assert found, f"{name} from pyproject.toml is missing in environment.yml"
        assert conda[found[0]] == spec, (
            f"{name}: environment.yml has {conda[found[0]]!r}, pyproject.toml {spec!r}"
        )


def test_environment_yml_installs_the_package_itself_with_the_dev_extra():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(dep["pip"] for dep in env["dependencies"] if isinstance(dep, dict))
    assert "-e .[dev]" in pip_section
