"""What ``verify_dataset`` returns: each problem found (``Problem``, an error or a warning naming its file)
and the report that gathers them with what the dataset holds (``VerifyReport``).

    report.ok                 # True when no problem is an error
    print(report.format())    # "<file>: error: <what is wrong>", one line per problem
    print(report.summary())   # cases, channels, labels found, spacing and shape ranges, the verdict
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from nnseg_nb.verify._format import _axis_ranges, _one_line, _short

Severity = Literal["error", "warning"]
ERROR: Severity = "error"
WARNING: Severity = "warning"


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a dataset: ``severity`` is ``"error"`` or ``"warning"``, ``file`` the path concerned."""

    severity: Severity
    file: str
    message: str

    def format(self) -> str:
        return f"{self.file}: {self.severity}: {self.message}"


@dataclass
class VerifyReport:
    """All problems of a dataset plus what was found (for the summary)."""

    folder: Path
    problems: list[Problem] = field(default_factory=list)
    num_cases: int = 0
    channel_names: dict = field(default_factory=dict)
    file_ending: str | None = None
    labels_declared: dict = field(default_factory=dict)
    labels_found: list[int] = field(default_factory=list)
    spacing_range: tuple[list[float], list[float]] | None = None  # (min, max) per axis, (Z, Y, X)
    shape_range: tuple[list[int], list[int]] | None = None

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def format(self) -> str:
        """One line per problem: ``<file>: <severity>: <message>``."""
        return "\n".join(p.format() for p in self.problems)

    def summary(self) -> str:
        channels = ", ".join(f"{k}: {v}" for k, v in self.channel_names.items()) or "?"
        declared = ", ".join(f"{k}={v}" for k, v in self.labels_declared.items()) or "?"
        lines = [
            f"{self.folder.name}: {self.num_cases} cases, {len(self.channel_names)} channel(s) ({channels}), "
            f"file ending {self.file_ending or '?'}",
            f"labels found: {_short(self.labels_found) or 'none'} (declared: {declared})",
        ]
        if self.spacing_range:
            lines.append(f"spacing (z, y, x): {_axis_ranges(*self.spacing_range)}")
        if self.shape_range:
            lines.append(f"shape (z, y, x): {_axis_ranges(*self.shape_range)}")
        verdict = "OK" if self.ok else "NOT OK"
        lines.append(f"{verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)

    def __str__(self) -> str:
        return "\n".join(part for part in (self.format(), self.summary()) if part)


class _Problems(list):
    """A list of Problems with shorthands; paths are kept as given."""

    def error(self, file: Any, message: str) -> None:
        self.append(Problem(ERROR, str(file), _one_line(message)))

    def warning(self, file: Any, message: str) -> None:
        self.append(Problem(WARNING, str(file), _one_line(message)))
