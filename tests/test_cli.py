"""The ``nnseg-nb`` command as a whole: help for every subcommand, one readable line per user error.

Each subcommand's own behaviour is tested next to its module (test_verify, test_convert, ...).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from nnseg_nb import cli


def test_top_level_help_lists_every_subcommand(capsys):
    assert cli.main([]) == 0
    listing = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert name in listing


@pytest.mark.parametrize("name", sorted(cli.SUBCOMMANDS))
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: nnseg-nb {name}")
    assert len(text.splitlines()) >= 3  # usage, description and at least one option


def test_unknown_subcommand_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["no-such-stage"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'no-such-stage'" in capsys.readouterr().err


def test_missing_dataset_is_one_line_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("nnUNet_raw", str(tmp_path))
    completed = subprocess.run(
        [sys.executable, "-m", "nnseg_nb.cli", "verify", "Dataset999_Nothing"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert completed.returncode == 1
    assert completed.stdout == ""
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Dataset999_Nothing" in lines[0]
    assert "Traceback" not in completed.stderr


def test_console_script_is_installed():
    """``pip install`` puts ``nnseg-nb`` next to the interpreter (the README's commands use it)."""
    script = Path(sys.executable).parent / "nnseg-nb"
    assert script.is_file(), f"{script} missing: install the package (pip install -e .)"
    completed = subprocess.run([str(script), "--help"], capture_output=True, text=True)
    assert completed.returncode == 0 and completed.stdout.startswith("usage: nnseg-nb")


def _documented_commands() -> list[tuple[str, str]]:
    """Every ``nnseg-nb ...`` line in the fenced code blocks of the READMEs (prompt and comment removed)."""
    root = Path(__file__).resolve().parents[1]
    found = []
    for readme in ("README.md", "notebooks/README.md", "data_demo/README.md", "benchmarks/README.md"):
        in_code = False
        for line in (root / readme).read_text().splitlines():
            if line.startswith("```"):
                in_code = not in_code
                continue
            command = line.removeprefix("$ ").split("  #")[0].strip()
            if in_code and command.startswith("nnseg-nb "):
                found.append((readme, command))
    return found


@pytest.mark.parametrize("readme, command", _documented_commands())
def test_documented_commands_parse(readme, command):
    """A command shown to users has the arguments the parser wants (the README once lacked --labels)."""
    import shlex

    args = cli.build_parser().parse_args(shlex.split(command)[1:])
    assert args.func is not None, (readme, command)


def test_documented_commands_are_found():
    commands = [command for _, command in _documented_commands()]
    assert "nnseg-nb demo" in commands and len(commands) >= 15
    assert any(command.startswith("nnseg-nb convert folders") for command in commands)


def test_dataset_json_without_a_required_key_is_one_line(tmp_path, capsys):
    folder = tmp_path / "Dataset990_NoEnding"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "dataset.json").write_text(
        '{"channel_names": {"0": "CT"}, "labels": {"background": 0, "a": 1}, "numTraining": 0}'
    )
    assert cli.main(["fingerprint", str(folder)]) == 1
    err = capsys.readouterr().err
    assert (
        err
        == f"error: {folder / 'dataset.json'}: missing required keys file_ending (check it with `nnseg-nb verify`)\n"
    )


def test_an_os_error_is_one_line(monkeypatch, capsys):
    import nnseg_nb.verify

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "/data/Dataset001_X/imagesTr")

    monkeypatch.setattr(nnseg_nb.verify, "verify_dataset", denied)
    assert cli.main(["verify", "1"]) == 1
    assert capsys.readouterr().err == "error: [Errno 13] Permission denied: '/data/Dataset001_X/imagesTr'\n"


def test_output_into_a_closed_pipe_is_no_traceback(tmp_path):
    """``nnseg-nb verify 904 | head -1``: the reader leaves early; no BrokenPipeError traceback."""
    from nnseg_nb.demo_data import build_demo_datasets

    folder = build_demo_datasets(tmp_path, only=["Dataset904_Shapes2D"], progress=False)[
        "Dataset904_Shapes2D"
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "nnseg_nb.cli", "verify", str(folder), "-np", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    process.stdout.close()  # before the first line is written: that write fails with EPIPE
    stderr = process.stderr.read()
    assert process.wait() == 1
    assert stderr == ""


def test_invalid_labels_stop_planning_with_one_line_each(tmp_path, capsys):
    """plan/fingerprint/preprocess read dataset.json through load_dataset_json, which applies nnU-Net's label
    rules: a duplicate value and a gap are two error lines naming the file, before any work."""
    folder = tmp_path / "Dataset991_BadLabels"
    (folder / "imagesTr").mkdir(parents=True)
    (folder / "dataset.json").write_text(
        '{"channel_names": {"0": "CT"}, "numTraining": 0, "file_ending": ".nii.gz", '
        '"labels": {"background": 0, "a": 1, "b": 1, "c": 3}}'
    )
    assert cli.main(["plan", str(folder)]) == 1
    lines = capsys.readouterr().err.splitlines()
    path = folder / "dataset.json"
    assert lines == [
        f"error: {path}: labels 'a', 'b' share the value 1",
        f"error: {path}: label values must be consecutive from 0; missing [2]",
    ]
