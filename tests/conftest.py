"""Test-session settings: headless plotting, quiet progress bars (inherited by notebook kernels too)."""

import os

os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("TQDM_DISABLE", "1")
