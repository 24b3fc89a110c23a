"""Keep freed memory in the process: glibc settings for a loop that allocates alike arrays every scan.

Every scan allocates the same few dozen numpy arrays of 0.1-5 MB. By default glibc gives such
memory back to the kernel when it is freed (large blocks are unmapped, the heap top is trimmed),
so the next scan faults it in again page by page: about 0.3 ms per MB on the 2-core development
machine, where keeping it took the per-point inputs from 6.3 to 3.3 ms and encoding from 2.7 to
1.4 ms in `kdmos bench` (docs/performance.md, "Stage work, third session"). The ROS 2 real-time
guidance does the same for the same reason (ros2/realtime_support, rttest:
``mallopt(M_TRIM_THRESHOLD, -1)``, ``mallopt(M_MMAP_MAX, 0)``).
The process then holds on to its peak working set (a few hundred MB with a 128-beam sensor)
instead of returning it between scans.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import platform

# glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8


@functools.cache
def keep_freed_memory() -> bool:
    """Tell glibc malloc to keep freed memory, once per process; False where there is no glibc.

    One arena for every thread (the node's callback and ONNX Runtime threads free into the same heap
    the scan loop takes from); no heap trimming; no blocks served by mmap (they are unmapped on free).
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return all(
        mallopt(option, value) == 1
        for option, value in ((_M_ARENA_MAX, 1), (_M_TRIM_THRESHOLD, -1), (_M_MMAP_MAX, 0))
    )
