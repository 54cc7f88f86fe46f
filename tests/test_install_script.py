"""scripts/install.sh, the README's one-step install: the CPU build of torch where there is no NVIDIA GPU.

Run with --dry-run (it prints the commands and runs none), with a fake nvidia-smi on PATH or none."""

import os
import platform
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "scripts" / "install.sh"
CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")


def _dry_run(tmp_path, *args, nvidia_smi_exit: int | None = None) -> list[str]:
    """The script's printed commands with PATH holding only the system tools (and a fake nvidia-smi)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir(exist_ok=True)
    if nvidia_smi_exit is not None:
        (fake_bin / "nvidia-smi").write_text(f"#!/bin/sh\nexit {nvidia_smi_exit}\n")
        (fake_bin / "nvidia-smi").chmod(0o755)
    system = [p for p in ("/usr/bin", "/bin") if not (Path(p) / "nvidia-smi").exists()]
    env = {**os.environ, "PATH": os.pathsep.join([str(fake_bin), *system])}
    completed = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--venv", str(tmp_path / "venv"), *args],
        capture_output=True,
        text=True,
        env=env,
    )
    assert completed.returncode == 0, completed.stderr
    assert not (tmp_path / "venv").exists()  # a dry run creates nothing
    return completed.stdout.splitlines()


@pytest.mark.skipif(platform.system() != "Linux", reason="the CPU index is chosen on Linux only")
def test_no_gpu_installs_the_cpu_build_of_torch_first(tmp_path):
    for lines in (_dry_run(tmp_path), _dry_run(tmp_path, nvidia_smi_exit=9)):  # none, or no driver
        commands = [line for line in lines if line.startswith("+ ")]
        assert lines[0] == "torch: torch from no NVIDIA GPU: the CPU build"
        assert commands[0].endswith(f"-m venv {tmp_path / 'venv'}")
        assert commands[2].endswith(f"-m pip install -q --timeout 20 --retries 1 torch {CPU_INDEX}")
        assert commands[3].endswith("-m pip install -q -e .[dev]")  # after torch: keeps the CPU build
        assert "whl/cpu" not in commands[3]


def test_an_unreachable_cpu_index_falls_back_to_pips_default(tmp_path):
    """A machine that reaches only a PyPI mirror still installs in one step (torch from PyPI)."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    log = tmp_path / "pip.log"
    # a stand-in python: "pip install ... --index-url" fails as an unreachable index does, the rest succeed
    (venv / "python").write_text(
        f'#!/bin/sh\necho "$@" >> {log}\ncase "$*" in *--index-url*) exit 1;; esac\nexit 0\n'
    )
    (venv / "python").chmod(0o755)
    env = {**os.environ, "PATH": os.pathsep.join([str(fake_bin), "/usr/bin", "/bin"])}
    if platform.system() != "Linux":
        pytest.skip("the CPU index is chosen on Linux only")
    done = subprocess.run(
        ["bash", str(SCRIPT), "--venv", str(tmp_path / "venv")], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    assert "CPU index is not reachable" in done.stdout
    calls = log.read_text().splitlines()
    assert (
        calls[1].endswith("whl/cpu") and calls[2] == "-m pip install -q torch" and calls[3].endswith(".[dev]")
    )


def test_a_gpu_or_a_pinned_index_uses_pips_default(tmp_path):
    lines = _dry_run(tmp_path, nvidia_smi_exit=0)
    torch_install = next(line for line in lines if " torch" in line and line.startswith("+ "))
    assert lines[0] == "torch: torch from pip's default index" and torch_install.endswith("install -q torch")
    lines = _dry_run(tmp_path, "--torch", "torch==2.13.0", "--torch-index", "pypi", "--extras", "")
    assert any(line.endswith("-m pip install -q torch==2.13.0") for line in lines)  # what .ci/run does
    assert lines[-2].endswith("-m pip install -q -e .")


def test_unknown_option_is_one_error_line(tmp_path):
    completed = subprocess.run(["bash", str(SCRIPT), "--gpu"], capture_output=True, text=True)
    assert completed.returncode == 1 and completed.stderr == "error: unknown option --gpu (see --help)\n"
    help_text = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True).stdout
    assert "--torch-index" in help_text and not help_text.startswith("#")
