"""Small helpers shared by every stage: atomic writes and JSON that numpy values survive.

>>> import tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "x.json"
>>> atomic_write_json(p, {"a": np.float32(1.5), "b": np.arange(2)})
>>> load_json(p)
{'a': 1.5, 'b': [0, 1]}
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np


def to_builtin(obj: Any) -> Any:
    """Convert numpy scalars/arrays and tuples (recursively) into JSON-friendly Python values."""
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: to_builtin(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_builtin(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_builtin(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, Path):
        return str(obj)
    return obj


def _atomic_replace(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_json(path: str | os.PathLike, obj: Any, sort_keys: bool = False, indent: int = 4) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (numpy values are converted)."""
    text = json.dumps(to_builtin(obj), sort_keys=sort_keys, indent=indent)
    _atomic_replace(Path(path), lambda f: f.write(text.encode()))


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write raw bytes to ``path`` atomically."""
    _atomic_replace(Path(path), lambda f: f.write(data))


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Save ``array`` as an uncompressed ``.npy`` (memory-mappable) atomically."""
    _atomic_replace(Path(path), lambda f: np.save(f, np.ascontiguousarray(array), allow_pickle=False))


def load_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a syntax error names the file and the line."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None


@contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) while the block runs.

    Several processes (notebooks under pytest-xdist, batch runs) may build the same shared files;
    the lock makes the second one wait and then find the first one's result. Where ``fcntl`` is
    missing (Windows) it does not lock.

    >>> import tempfile, pathlib
    >>> with file_lock(pathlib.Path(tempfile.mkdtemp()) / ".lock"):
    ...     pass
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
