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


def _floor_pins(profile: str = "floors") -> dict[str, str]:
    text = SCRIPT.read_text()
    block = re.search(rf"^\s*{re.escape(profile)}\)\n(.*?);;", text, re.S | re.M).group(1)
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


def test_floors_lite_pins_the_floors_but_torch_and_pillow():
    # CI's cheap run: its local CPU torch, and the first pillow with a Python 3.11 wheel; the rest as floors
    floors, lite = _floor_pins(), _floor_pins("floors-lite")
    assert set(lite) == set(floors)
    assert {name for name in floors if lite[name] != floors[name]} == {"torch", "pillow"}
    assert lite["pillow"] == "9.2.0" and lite["torch"] == "2.13.0"


def test_unknown_profile_is_a_usage_line():
    completed = subprocess.run(["bash", str(SCRIPT), "latest"], capture_output=True, text=True)
    assert completed.returncode == 1
    assert completed.stderr == "usage: scripts/compat.sh floors|colab|floors-lite [pytest arguments]\n"
