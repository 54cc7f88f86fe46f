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
    completed = subprocess.run([sys.executable, "-m", "nnseg_nb.cli", "verify", "Dataset999_Nothing"],
                               capture_output=True, text=True, cwd=tmp_path)
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
