"""Argument validation shared by every public entry point (and by the adapters).

Each check either returns the normalised value or raises a ``TypeError`` /
``ValueError`` whose message names the argument, the offending value and what
is allowed.  Nothing in the library allocates output before these pass.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["check_density", "check_gain", "check_int", "check_fraction"]


def _is_real(value: Any) -> bool:
    # bool is an Integral in Python; a density or gain of True is a bug, not 1.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_fraction(value: Any, name: str) -> float:
    """Return ``value`` as a float in ``(0, 1]`` or raise naming ``name``."""
    if not _is_real(value):
        raise TypeError(
            f"{name} must be a real number in (0, 1], got {value!r} of type {type(value).__name__}"
        )
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number in (0, 1], got {value!r}")
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must lie in (0, 1], got {value!r}")
    return value


def check_density(density: Any) -> float:
    """Return ``density`` as a float in ``(0, 1]``."""
    return check_fraction(density, "density")


def check_gain(gain: Any) -> float:
    """Return ``gain`` as a finite positive float."""
    if not _is_real(gain):
        raise TypeError(
            f"gain must be a finite positive real number, got {gain!r} of type {type(gain).__name__}"
        )
    gain = float(gain)
    if not math.isfinite(gain) or gain <= 0.0:
        raise ValueError(f"gain must be a finite positive real number, got {gain!r}")
    return gain


def check_int(value: Any, name: str, *, minimum: int = 1) -> int:
    """Return ``value`` as an ``int`` >= ``minimum`` (bools and floats are rejected)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer >= {minimum}, got {value!r} of type {type(value).__name__}"
        )
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value
