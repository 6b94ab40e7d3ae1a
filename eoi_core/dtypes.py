"""Output dtypes: float16, bfloat16 (via ``ml_dtypes``), float32 and float64.

Everything is computed in float64 and cast once to the requested dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["resolve_dtype", "eps"]

_NAMES = ("float16", "bfloat16", "float32", "float64")


def _bfloat16() -> np.dtype:
    try:
        import ml_dtypes
    except ImportError as error:  # pragma: no cover - exercised only without ml_dtypes
        raise TypeError(
            "dtype bfloat16 needs the 'ml_dtypes' package (pip install ml_dtypes)"
        ) from error
    return np.dtype(ml_dtypes.bfloat16)


def resolve_dtype(dtype: Any) -> np.dtype:
    """Return the NumPy dtype for ``dtype`` or raise ``TypeError``.

    Accepts anything ``numpy.dtype`` accepts that names one of float16,
    bfloat16, float32, float64 (including the string ``"bfloat16"``).
    """
    if isinstance(dtype, str) and dtype == "bfloat16":
        return _bfloat16()
    try:
        resolved = np.dtype(dtype)
    except TypeError as error:
        raise TypeError(f"dtype must be one of {_NAMES}, got {dtype!r}") from error
    if resolved.name not in _NAMES:
        raise TypeError(f"dtype must be one of {_NAMES}, got {dtype!r} ({resolved.name})")
    return resolved


def eps(dtype: Any) -> float:
    """Machine epsilon of a supported dtype (bfloat16: 2**-7)."""
    resolved = resolve_dtype(dtype)
    if resolved.name == "bfloat16":
        return 2.0**-7
    return float(np.finfo(resolved).eps)
