"""keep_freed_memory: memory a scan freed stays in the process for the next scan."""

from __future__ import annotations

import os
import platform

import numpy as np
import pytest

from kdmos_ros.pipeline.allocator import keep_freed_memory


def _resident_bytes() -> int:
    with open("/proc/self/statm", encoding="ascii") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc malloc settings"
)
def test_a_freed_array_stays_resident_and_is_reused() -> None:
    assert keep_freed_memory() and keep_freed_memory()  # once per process, then the same answer
    size = 64 << 20
    block = np.ones(size // 4, dtype=np.float32)  # touched: resident
    held = _resident_bytes()
    del block
    # glibc's default unmaps a 64 MB block on free; kept, the memory stays resident ...
    assert _resident_bytes() > held - size // 2
    again = np.ones(size // 4, dtype=np.float32)
    # ... and the next array of that size reuses it instead of growing the process.
    assert _resident_bytes() < held + size // 2
    assert again.sum() == size // 4
