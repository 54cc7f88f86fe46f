"""What every ``nnseg-nb`` subcommand shares: :class:`UserError` and how a path is shown.

    raise UserError("Dataset999 not found under $nnUNet_raw", "run: nnseg-nb demo-data --only 999")

A subcommand raises :class:`UserError` for anything wrong in what the user asked for;
:func:`nnseg_nb.cli.main` prints each problem as one ``error:`` line and exits 1. Paths in messages go
through :func:`_shown` so that outputs copied into notebooks and docs name no one's home folder.
"""

from __future__ import annotations


def _shown(path) -> str:
    """A path as the CLI prints it: relative to the project folder, ``$nnUNet_raw/...`` or ``~/...``
    (:func:`nnseg_nb.paths.display`), so that outputs copied into notebooks and docs name no one's home."""
    from nnseg_nb.paths import display

    return display(path)


class UserError(Exception):
    """An error in what the user asked for; ``problems`` are printed one per line."""

    def __init__(self, *problems: str):
        super().__init__("\n".join(problems))
        self.problems = list(problems)
