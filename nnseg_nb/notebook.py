"""Small helpers that every guided notebook calls in its first cells.

A notebook's parameters cell says ``profile = "auto"``; :func:`resolve_profile` turns that into
``"quick"`` (a CPU run of a couple of minutes, used by CI) or ``"full"`` (nnU-Net's own settings,
on a GPU). :func:`setup` seeds everything and makes the output folder, and :func:`write_results`
leaves the ``results.json`` that batch runs (:mod:`nnseg_nb.runner`) collect::

    profile = resolve_profile("auto")          # "quick" on this CPU machine, "full" on a GPU
    device = setup(seed=0, out_dir="runs/01_data")
    ...
    write_results("runs/01_data", {"n_cases": 20, "median_spacing": [1.0, 1.0, 1.0]})

>>> resolve_profile("quick"), resolve_profile("full")
('quick', 'full')
"""

from __future__ import annotations

import os
import random
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from nnseg_nb.utils import atomic_write_json, load_json

PROFILES = ("quick", "full")
RESULTS_FILE = "results.json"


def in_colab() -> bool:
    """True inside Google Colab (it imports ``google.colab`` when the kernel starts)."""
    return "google.colab" in sys.modules


def resolve_profile(profile: str = "auto") -> str:
    """``"auto"`` -> ``"full"`` when a CUDA GPU is present, else ``"quick"``; other values pass through.

    Args:
        profile: ``"auto"``, ``"quick"`` (small, fast CPU settings) or ``"full"`` (nnU-Net's settings).

    Example: ``resolve_profile("auto")`` is ``"quick"`` on a laptop and ``"full"`` on Colab with a GPU.
    """
    if profile == "auto":
        import torch

        return "full" if torch.cuda.is_available() else "quick"
    if profile not in PROFILES:
        raise ValueError(f"profile must be 'auto', 'quick' or 'full', got {profile!r}")
    return profile


def setup(seed: int = 0, out_dir: str | os.PathLike | None = None, deterministic: bool = True):
    """Seed Python, numpy and torch, create ``out_dir`` and return the device to compute on.

    Args:
        seed: one seed for ``random``, ``numpy`` (legacy global state) and torch (CPU and CUDA).
        out_dir: folder for the notebook's outputs; created if missing.
        deterministic: ask torch for deterministic kernels where it has them (warn, don't fail,
            where it has none), so the CPU golden outputs repeat exactly.

    Returns:
        ``torch.device("cuda")`` when a GPU is present, else ``torch.device("cpu")``.
    """
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_summary() -> str:
    """One line naming the device, torch and CUDA versions (for an ``nbval-ignore-output`` cell)."""
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return f"device: cuda ({name}), torch {torch.__version__}, CUDA {torch.version.cuda}"
    hint = " (Colab: Runtime > Change runtime type > GPU)" if in_colab() else ""
    return f"device: cpu{hint}, torch {torch.__version__}"


def write_results(out_dir: str | os.PathLike, results: Mapping[str, Any]) -> Path:
    """Write a notebook's headline figures to ``out_dir/results.json`` (atomically) and return its path.

    Top-level numbers and short strings are what ``nnseg-nb demo`` shows in its index; nested
    values (per-class tables, lists) are kept in the file for batch runs to read.
    numpy values are converted to plain Python.
    """
    path = Path(out_dir) / RESULTS_FILE
    atomic_write_json(path, dict(results))
    return path


def read_results(out_dir: str | os.PathLike) -> dict | None:
    """The ``results.json`` in ``out_dir``, or None when the notebook wrote none."""
    path = Path(out_dir) / RESULTS_FILE
    return load_json(path) if path.is_file() else None
