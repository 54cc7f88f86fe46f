"""What the side-by-side benchmarks share: the CPU's name and the AVX2-only kernel limit.

Imports nothing heavy: the limit must be in the environment before torch is imported.
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

# Kernels limited to AVX2 (the ATen dispatch and oneDNN's JIT) for both tools: on an AVX-512 CPU, the
# instructions an AVX2-only CPU runs (oneDNN's verbose log says "isa:Intel AVX2").
AVX2_ONLY = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"}


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), to be quoted with every CPU figure."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def add_isa_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--isa",
        choices=["native", "avx2"],
        default="native",
        help="avx2: both tools limited to AVX2 kernels (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA), "
        "as on a CPU without AVX-512; nnseg_nb's default precision is then fp32",
    )


def limit_kernels(isa: str) -> None:
    """Put the limit in this process's environment (children inherit it); call before importing torch."""
    if isa == "avx2":
        os.environ.update(AVX2_ONLY)
