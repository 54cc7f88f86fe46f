"""devices.keep_freed_memory: big tensors reuse freed memory inside the context, glibc's defaults after it.

Page faults are counted in a child process (mallopt is process-wide, and the test workers' own heaps
would blur the counts).
"""

import json
import subprocess
import sys

import pytest

from nnseg_nb import devices

CHILD = r"""
import json, resource
import numpy as np
from nnseg_nb.devices import keep_freed_memory

def faults_of_a_big_tensor():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = np.ones(16 * 2**20, np.float32)  # 64 MiB, every page written (malloc, as torch's CPU tensors)
    del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

counts = {"outside": [faults_of_a_big_tensor() for _ in range(2)]}
with keep_freed_memory() as applied:
    with keep_freed_memory():  # nested: the inner exit must not restore the defaults
        counts["nested"] = [faults_of_a_big_tensor() for _ in range(3)]
    counts["after_inner_exit"] = [faults_of_a_big_tensor() for _ in range(2)]
counts["after"] = [faults_of_a_big_tensor() for _ in range(2)]
counts["applied"] = applied
print(json.dumps(counts))
"""


@pytest.mark.skipif(devices._glibc() is None, reason="needs Linux with glibc")
def test_big_tensors_reuse_freed_memory_only_inside_the_context():
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, check=True)
    counts = json.loads(result.stdout)
    assert counts["applied"] is True
    # the heap grows once: fresh pages fault in (fewer of them with transparent huge pages)
    fresh = counts["nested"][0]
    assert fresh > 0
    # glibc's default: each big array is a fresh mmap, returned on free, so it faults in every time
    assert min(counts["outside"]) > 0.5 * fresh
    # inside: the freed block is reused, no page faults
    assert max(counts["nested"][1:] + counts["after_inner_exit"]) < 0.05 * fresh
    # after the outer exit: the defaults again
    assert min(counts["after"]) > 0.5 * fresh


def test_keep_freed_memory_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(devices, "_glibc", lambda: None)
    with devices.keep_freed_memory() as applied:
        assert applied is False
    assert devices._kept_depth == 0
