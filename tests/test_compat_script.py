"""scripts/compat.sh pins the floors that pyproject.toml declares (so the floors run tests what we promise)."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "compat.sh"


def _floors() -> dict[str, str]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    floors = {}
    for requirement in project["dependencies"]:
        match = re.match(r"^([A-Za-z0-9_.-]+)\s*>=\s*([0-9.]+)", requirement)
        if match:
            floors[match.group(1).lower()] = match.group(2)
    return floors


def _floor_pins() -> dict[str, str]:
    text = SCRIPT.read_text()
    block = re.search(r"floors\)\n(.*?);;", text, re.S).group(1)
    return {name.lower(): version for name, version in re.findall(r"([A-Za-z0-9_.-]+)==([0-9.]+)", block)}


def test_floor_pins_are_the_declared_floors():
    floors, pins = _floors(), _floor_pins()
    assert set(floors) == set(pins), (sorted(floors), sorted(pins))
    for name, floor in floors.items():
        pinned = pins[name].split(".")
        declared = floor.split(".")
        assert pinned[: len(declared)] == declared, f"{name}: pinned {pins[name]}, the floor is {floor}"
    assert re.search(r"floors\)\n\s*python_version=3\.10\b", SCRIPT.read_text())
    requires = re.search(r'requires-python = ">=([0-9.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
    assert requires == "3.10"


def test_unknown_profile_is_a_usage_line():
    completed = subprocess.run(["bash", str(SCRIPT), "latest"], capture_output=True, text=True)
    assert completed.returncode == 1
    assert completed.stderr == "usage: scripts/compat.sh floors|colab [pytest arguments]\n"
