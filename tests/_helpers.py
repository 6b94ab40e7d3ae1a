"""The assertions every test module shares: one tolerance for one promise.

The exactness promise (``W^T W = g^2 I`` for ``out >= in``, ``W W^T = g^2 I``
otherwise; for a kernel, per group, at the centre tap) holds at the rounding
level of the output dtype.  Each entry of a row of norm ``g`` is rounded by at
most ``eps/2`` relative, so an entry of the Gram matrix moves by about
``eps g^2``, and a sum over ``n`` entries with independent rounding errors
grows like ``sqrt(n)``.  :func:`orthogonality_bound` is that, with a factor 8
of head room: ``8 eps(dtype) g^2 sqrt(max(out, in))``.

Weights are given in the canonical PyTorch layout ``(out, in // groups, *kernel)``
as anything ``numpy.asarray`` takes (a torch tensor after ``.detach()``, a
JAX array, a Keras variable converted with ``from_channels_last``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import eoi_core


def dtype_name(dtype: Any) -> str:
    """``"float32"`` for ``np.float32``, ``torch.float32``, ``jnp.float32``, ``"float32"``, ..."""
    if isinstance(dtype, str):
        return dtype.removeprefix("torch.")
    text = str(dtype)
    if text.startswith("torch."):
        return text.removeprefix("torch.")
    return np.dtype(dtype).name


def eps(dtype: Any) -> float:
    """Machine epsilon of a supported dtype (bfloat16: ``2**-7``)."""
    return eoi_core.dtypes.eps(dtype_name(dtype))


def orthogonality_bound(dtype: Any, gain: float, shape: tuple[int, ...]) -> float:
    """``8 eps(dtype) g^2 sqrt(max(out, in))``: the tolerance of the exactness promise.

    ``shape`` is the weight's canonical shape (only ``out`` and ``in`` matter).
    """
    return 8 * eps(dtype) * gain**2 * math.sqrt(max(shape[0], shape[1]))


def as_float64(array: Any) -> np.ndarray:
    return np.asarray(array).astype(np.float64)


def centre_index(shape: tuple[int, ...]) -> tuple:
    """Index of the centre tap ``(k - 1) // 2`` of each kernel axis, as ``(:, :, c1, ...)``."""
    return (slice(None), slice(None)) + tuple((k - 1) // 2 for k in shape[2:])


def centre_blocks(weight: Any, groups: int = 1, *, transposed: bool = False) -> list[np.ndarray]:
    """Per group, the ``(out/g, in/g)`` centre matrix of a canonical weight, in float64.

    A dense ``(out, in)`` weight is its own centre.  ``transposed=True`` gives
    the map of a transposed convolution (``y = H^T x``), i.e. each block transposed.
    """
    array = as_float64(weight)
    rows = array.shape[0] // groups
    centre = array[centre_index(array.shape)]
    blocks = [centre[g * rows:(g + 1) * rows] for g in range(groups)]
    return [block.T for block in blocks] if transposed else blocks


def gram_gap(matrix: Any, gain: float = 1.0) -> float:
    """``max |M^T M - g^2 I|`` for a tall or square ``M``, else ``max |M M^T - g^2 I|`` (float64)."""
    m = as_float64(matrix)
    gram = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    return float(np.abs(gram - gain**2 * np.eye(gram.shape[0])).max(initial=0.0))


def assert_orthogonal(weight: Any, *, gain: float = 1.0, groups: int = 1, dtype: Any = None,
                      transposed: bool = False) -> float:
    """Assert the exactness promise for every centre block; return the worst Gram gap.

    ``dtype`` is the dtype the weight was made in (default: the array's own).
    """
    array = np.asarray(weight)
    name = dtype_name(dtype if dtype is not None else array.dtype)
    bound = orthogonality_bound(name, gain, (array.shape[0] // groups, array.shape[1]))
    worst = max(gram_gap(block, gain) for block in centre_blocks(array, groups, transposed=transposed))
    assert worst <= bound, f"orthogonality gap {worst:.3g} > {bound:.3g} ({name}, gain {gain}, shape {array.shape})"
    return worst


def off_centre_taps(weight: Any) -> np.ndarray:
    """Every entry of a kernel but its centre tap, flattened (empty for a dense weight)."""
    array = np.asarray(weight)
    keep = np.ones(array.shape, dtype=bool)
    keep[centre_index(array.shape)] = False
    return array[keep]
