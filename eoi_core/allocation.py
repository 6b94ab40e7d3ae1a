"""Output arrays that start on a cache-line boundary.

NumPy aligns large allocations to 16 bytes.  The Numba engine writes large
outputs a whole cache line at a time with non-temporal stores
(:mod:`eoi_core.engine`), which need 64-byte aligned addresses; an output
that starts on one lets every row of a weight whose rows are a multiple of
64 bytes take that path.

>>> weight = aligned_zeros((3, 5), np.float32)
>>> weight.ctypes.data % CACHE_LINE, weight.shape, weight.dtype, bool(weight.any())
(0, (3, 5), dtype('float32'), False)
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["aligned_zeros", "CACHE_LINE"]

CACHE_LINE = 64


def aligned_zeros(shape: Sequence[int], dtype: np.dtype | type) -> np.ndarray:
    """``np.zeros(shape, dtype)`` whose data starts on a ``CACHE_LINE`` boundary.

    The array is a C-contiguous view of a zeroed byte buffer ``CACHE_LINE``
    bytes longer (``np.zeros`` of a large size maps fresh zero pages, so the
    zeros cost nothing until written).
    """
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    raw = np.zeros(size + CACHE_LINE, dtype=np.uint8)
    offset = -raw.ctypes.data % CACHE_LINE
    return raw[offset : offset + size].view(dtype).reshape(tuple(shape))
