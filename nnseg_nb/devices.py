"""Where and how a training runs: the device, the autocast precision, and the DDP split of a batch.

    resolve_device("auto")                          # cuda:0 if present, else mps, else cpu
    autocast_dtype(torch.device("cpu"), "auto")     # torch.bfloat16 on a CPU with AVX512-BF16 / AMX, else None
    rank_batch(5, 0.33, rank=1, world=2)            # (2, 1.0): rank 1 holds the batch's foreground samples
    with keep_freed_memory(): ...                   # big tensors reuse freed memory instead of new pages

``precision="auto"`` deviates from nnU-Net on purpose on a CPU (nnU-Net trains in fp32 there): bf16 autocast
where the CPU runs bf16 natively, fp32 elsewhere, where emulated bf16 is many times slower.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
from collections.abc import Iterator
from pathlib import Path

import torch
import torch.distributed as dist


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"``: CUDA if available, else MPS, else CPU; otherwise the named device, checked."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        return torch.device("mps" if torch.backends.mps.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device cuda requested but torch sees no CUDA GPU; use --device cpu")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device mps requested but this torch build or machine has no MPS")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", 0)
    return device


def cpu_runs_bf16_natively(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """True if the CPU has bf16 instructions (AVX512-BF16 or AMX), where bf16 autocast pays off, and torch
    may use them (``ATEN_CPU_CAPABILITY=avx2`` limits its kernels to AVX2, where bf16 is emulated)."""
    capability = getattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")()
    if not capability.upper().startswith(("AVX512", "AMX")):
        return False
    try:
        text = Path(cpuinfo).read_text()
    except OSError:  # not Linux: no way to tell, stay in fp32
        return False
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def autocast_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The autocast dtype for a device and precision setting; None means plain fp32.

    >>> autocast_dtype(torch.device("cuda"), "auto"), autocast_dtype(torch.device("cpu"), "fp32")
    (torch.float16, None)
    """
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        if device.type == "cpu" and cpu_runs_bf16_natively():
            return torch.bfloat16
        return None
    if precision not in ("fp32", "bf16", "fp16"):
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes (0 and 1 without torch.distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def rank_batch(batch_size: int, oversample: float, rank: int, world: int) -> tuple[int, float]:
    """This rank's share of the global batch and its foreground oversampling (``_set_batch_size_and_oversample``).

    The global batch is split as evenly as possible; the ranks holding the batch's last, foreground-forced
    samples oversample accordingly, so the whole batch is drawn as one process would draw it.

    >>> [rank_batch(5, 0.33, r, 2) for r in range(2)]
    [(3, 0.0), (2, 1.0)]
    """
    if world == 1:
        return batch_size, oversample
    if batch_size < world:
        raise ValueError(f"batch size {batch_size} is smaller than the {world} DDP processes")
    sizes = [
        batch_size // world + (1 if (batch_size // world) * world + i < batch_size else 0)
        for i in range(world)
    ]
    low, high = sum(sizes[:rank]), sum(sizes[: rank + 1])
    forced = [not i < round(batch_size * (1 - oversample)) for i in range(batch_size)]
    if high / batch_size < 1 - oversample:
        return sizes[rank], 0.0
    if low / batch_size > 1 - oversample:
        return sizes[rank], 1.0
    return sizes[rank], sum(forced[low:high]) / sizes[rank]


def sum_over_ranks(values: torch.Tensor) -> torch.Tensor:
    if rank_and_world()[1] > 1:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


# --- memory --------------------------------------------------------------------------------------------------

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_GLIBC_DEFAULT_MMAP_MAX, _GLIBC_DEFAULT_THRESHOLD = 65536, 128 * 1024
_kept_depth = 0


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


@contextlib.contextmanager
def keep_freed_memory() -> Iterator[bool]:
    """Let big CPU tensors reuse freed memory instead of fresh pages from the kernel (Linux, glibc).

    glibc hands every allocation above 128 KiB to ``mmap`` and returns it to the kernel on ``free``, so each
    U-Net activation (tens of MB) comes back as new zero pages, one page fault per 4 KiB: on a 2-core EPYC
    a third of a CPU training step (fp32 or bf16) and a fifth of a prediction forward went to the kernel.
    Inside this context big blocks come from the heap and stay there when freed, so the next iteration
    reuses them (the allocator cache that PyTorch's CUDA side has, and jemalloc / tcmalloc give on the CPU).
    Results do not change; peak memory rises a little (the heap keeps what it had). On exit glibc's
    default values are set again (as fixed thresholds: glibc's own adjustment of the mmap threshold stays
    off once any is set) and the kept memory is returned (``malloc_trim``). Re-entrant; yields whether it
    applies (False off glibc, where nothing changes).

    >>> with keep_freed_memory():
    ...     x = sum(torch.ones(2**22) for _ in range(3))    # the second and third reuse the first's memory
    """
    global _kept_depth
    libc = _glibc()
    if libc is None:
        yield False
        return
    if _kept_depth == 0:
        libc.mallopt(_M_MMAP_MAX, 0)  # big blocks from the heap, not mmap ...
        libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)  # ... and the heap is not trimmed on free
    _kept_depth += 1
    try:
        yield True
    finally:
        _kept_depth -= 1
        if _kept_depth == 0:
            libc.mallopt(_M_MMAP_MAX, _GLIBC_DEFAULT_MMAP_MAX)
            libc.mallopt(_M_MMAP_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, _GLIBC_DEFAULT_THRESHOLD)
            libc.malloc_trim(0)
