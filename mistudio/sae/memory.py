"""CPU allocator tuning for training loops (Linux/glibc).

glibc serves allocations above 32 MB with a fresh mmap and unmaps them on free, so every
step's [batch, d_sae] tensors (4096 x 3072 fp32 = 50 MB each) are page-faulted and zeroed
by the kernel again: ~10 ms per tensor on a 2-core CPU, 10-25% of a dense step. Telling
glibc to serve everything from its heap and never trim it makes freed blocks reusable.
The price: the process keeps its peak memory until it exits, and glibc's 64-byte-aligned
blocks for torch can leave a few unreusable holes (a few hundred MB at worst seen here).
That suits a dedicated training worker process, not a notebook kernel or a test session,
so nothing calls it implicitly: the process that runs training opts in, once, up front.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def reuse_freed_memory() -> bool:
    """Keep freed large blocks for reuse (glibc only). Returns False where it does not apply."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others: nothing to do
        return False
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    ok = mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1 and ok
    return ok
