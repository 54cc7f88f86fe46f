"""The planner's trace: one ``TraceRecord`` per decision, as ``plan(..., trace=[])`` appends them, and
the text ``format_explanation`` makes of them (``nnseg-nb plan --explain``).

    print(format_explanation(explain(fingerprint, dataset_json)))
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True)
class TraceRecord:
    """One decision of the planner: which step, in which configuration, why, and the numbers."""

    step: str  # "target_spacing", "transpose", "patch", "shrink", "batch_size", "3d_lowres", ...
    message: str  # one readable sentence
    configuration: str | None = None  # "2d", "3d_fullres", "3d_lowres" or None for dataset-wide steps
    values: dict = field(default_factory=dict)


def _note(trace: list | None, step: str, message: str, configuration: str | None = None, **values) -> None:
    if trace is not None:
        trace.append(TraceRecord(step, message, configuration, values))


def format_explanation(trace: Sequence[TraceRecord]) -> str:
    """The trace as text, one line per record, grouped under a header per configuration."""
    lines, current = [], object()
    for record in trace:
        if record.configuration != current:
            current = record.configuration
            lines.append(f"[{current or 'dataset'}]")
        lines.append(f"  {record.step}: {record.message}")
    return "\n".join(lines)


def _fmt(values) -> str:
    return "(" + ", ".join(f"{float(v):.4g}" for v in values) + ")"
