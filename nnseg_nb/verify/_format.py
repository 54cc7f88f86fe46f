"""Small helpers that shape the verifier's messages: numbers, lists, axis ranges, one line per problem.

>>> _short([0, 1, 2.5, 1e-7])
'0, 1, 2.5, 1e-07'
>>> _axis_ranges([1, 0.5, 0.5], [3, 0.5, 0.5])
'1-3 x 0.5 x 0.5'
>>> _one_line("cannot read\\n   header")
'cannot read header'
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any


def _describe_channels(channel_names: dict) -> str:
    names = ", ".join(f"{k}: {v}" for k, v in channel_names.items())
    return f"{len(channel_names)} channel{'s' if len(channel_names) != 1 else ''} [{names}]"


def _short(values: Iterable, limit: int = 10) -> str:
    values = list(values)
    shown = ", ".join(_fmt_number(v) for v in values[:limit])
    return shown + (f", ... ({len(values)} values)" if len(values) > limit else "")


def _fmt_number(value: Any) -> str:
    return str(int(value)) if float(value).is_integer() else f"{float(value):.6g}"


def _fmt(values: Iterable) -> str:
    return "(" + ", ".join(f"{float(v):.6g}" for v in values) + ")"


def _axis_ranges(low: Sequence, high: Sequence) -> str:
    return " x ".join(
        f"{_fmt_number(a)}" if a == b else f"{_fmt_number(a)}-{_fmt_number(b)}" for a, b in zip(low, high)
    )


def _one_line(message: str) -> str:
    return re.sub(r"\s*\n\s*", " ", str(message)).strip()


def _strip_path(message: str, path: Any) -> str:
    """Readers' messages start with the file's path; the Problem names it already."""
    prefix = f"{path}: "
    return message[len(prefix) :] if message.startswith(prefix) else message
