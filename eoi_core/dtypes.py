"""Output dtypes: float16, bfloat16 (via ``ml_dtypes``), float32 and float64.

Everything is computed in float64 and cast once to the requested dtype.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DTYPES", "resolve_dtype", "eps", "gain_range", "check_gain_representable"]

DTYPES = ("float16", "bfloat16", "float32", "float64")
"""Names of the supported output dtypes, the one list every adapter uses."""

_NAMES = DTYPES


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


def gain_range(dtype: Any) -> tuple[float, float]:
    """The gains whose orthogonal values ``dtype`` can hold: ``[smallest normal, largest finite]``.

    Entries of ``g * H`` (``H`` orthogonal) lie in ``[-g, g]`` and the largest
    entry of each row is at least ``g / sqrt(width)``: a gain above the
    dtype's largest finite value overflows, and one below its smallest
    normal number leaves the values subnormal or zero (float16 at
    ``gain=1e-8`` would be all zeros), so neither is orthogonal in that dtype.

    Examples
    --------
    >>> gain_range("float16")
    (6.103515625e-05, 65504.0)
    """
    resolved = resolve_dtype(dtype)
    if resolved.name == "bfloat16":
        return 2.0**-126, float.fromhex("0x1.fe00000000000p+127")
    info = np.finfo(resolved)
    return float(info.tiny), float(info.max)


def check_gain_representable(gain: float, dtype: Any) -> None:
    """Raise ``ValueError`` if ``dtype`` cannot hold the values of a weight of gain ``gain``."""
    low, high = gain_range(dtype)
    if not low <= gain <= high:
        raise ValueError(
            f"gain={gain!r} cannot be represented in dtype {resolve_dtype(dtype).name}: its "
            f"orthogonal values would {'overflow' if gain > high else 'underflow'}; "
            f"for this dtype gain must lie in [{low:.6g}, {high:.6g}]"
        )
