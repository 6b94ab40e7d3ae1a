"""Output arrays that start on a cache-line boundary, in fresh pages when large.

NumPy aligns large allocations to 16 bytes.  The Numba engine writes large
outputs a whole cache line at a time with non-temporal stores
(:mod:`eoi_core.engine`), which need 64-byte aligned addresses; an output
that starts on one lets every row of a weight whose rows are a multiple of
64 bytes take that path.

A large output (``FRESH_BYTES`` or more) gets its own private anonymous
mapping on Linux, advised for transparent huge pages as NumPy advises its
own large arrays.  Through ``malloc`` it would do so only the first time:
glibc raises its mmap threshold when such a block is freed (up to 32 MiB), so
the next output of that size is carved from the heap and ``calloc`` clears
it with a ``memset`` on the calling thread, before any engine thread starts
(1 ms of a 21 ms call at 4096 x 4096).  Fresh pages are zeroed by the kernel
when first written, which the engine does on one thread while the others
replay (:func:`eoi_core.engine._warm`).  The mapping is unmapped when the
last array that views it is freed.

>>> weight = aligned_zeros((3, 5), np.float32)
>>> weight.ctypes.data % CACHE_LINE, weight.shape, weight.dtype, bool(weight.any())
(0, (3, 5), dtype('float32'), False)
>>> large = aligned_zeros((1024, 1024), np.float32)
>>> large.ctypes.data % CACHE_LINE, large.flags.c_contiguous, large.flags.writeable, bool(large.any())
(0, True, True, False)
"""

from __future__ import annotations

import math
import mmap
import sys
from typing import Sequence

import numpy as np

__all__ = ["aligned_zeros", "CACHE_LINE", "FRESH_BYTES"]

CACHE_LINE = 64
# From this size on an output gets fresh pages of its own (NumPy advises huge pages from 4 MiB).
FRESH_BYTES = 1 << 22


def _fresh_pages(size: int) -> np.ndarray | None:
    """``size`` zero bytes in a private anonymous mapping advised for huge pages, or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, ValueError):
        return None
    try:
        memory.madvise(mmap.MADV_HUGEPAGE)
    except (AttributeError, OSError):
        pass  # a kernel without transparent huge pages: 4 KiB pages, still fresh
    return np.frombuffer(memory, dtype=np.uint8)


def aligned_zeros(shape: Sequence[int], dtype: np.dtype | type) -> np.ndarray:
    """``np.zeros(shape, dtype)`` whose data starts on a ``CACHE_LINE`` boundary.

    Below ``FRESH_BYTES`` the array is a C-contiguous view of a zeroed byte
    buffer ``CACHE_LINE`` bytes longer; from ``FRESH_BYTES`` on (on Linux) a
    view of fresh page-aligned pages (module docstring).  Either way the
    zeros cost nothing until written.
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    if size >= FRESH_BYTES:
        raw = _fresh_pages(size)
        if raw is not None:
            return raw.view(dtype).reshape(tuple(shape))
    raw = np.zeros(size + CACHE_LINE, dtype=np.uint8)
    offset = -raw.ctypes.data % CACHE_LINE
    return raw[offset : offset + size].view(dtype).reshape(tuple(shape))
