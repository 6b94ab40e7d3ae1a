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

__all__ = [
    "check_density",
    "check_gain",
    "check_int",
    "check_fraction",
    "check_center_density",
    "check_engine",
    "check_mapping_density",
    "kernel_center_density",
    "CENTER_POLICIES",
    "ENGINES",
]

CENTER_POLICIES = ("sqrt",)
ENGINES = ("numba", "reference")


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


def check_center_density(center_density: Any) -> float | str | None:
    """Return ``center_density`` as ``None``, a float in ``(0, 1]`` or a policy name.

    One rule for every adapter: ``None`` (the centre at the layer density),
    ``"sqrt"`` (the paper's second variant) or a fraction.  It is a kernel
    option: :func:`eoi_core.sparse_orthogonal` rejects a float for a rank-2
    weight (the whole matrix is its centre), and model-level ``sparsify``
    applies it to kernels only (see :func:`kernel_center_density`).
    """
    if center_density is None:
        return None
    if isinstance(center_density, str):
        if center_density not in CENTER_POLICIES:
            raise ValueError(
                f"center_density must be None, a float in (0, 1] or one of {CENTER_POLICIES}, "
                f"got {center_density!r}"
            )
        return center_density
    return check_fraction(center_density, "center_density")


def kernel_center_density(shape: Any, center_density: Any) -> float | str | None:
    """The ``center_density`` that model-level ``sparsify`` passes for a weight of ``shape``.

    Dense (rank-2) weights have no kernel taps: their whole matrix is the
    centre, so a model-wide ``center_density`` applies to convolution kernels
    (rank >= 3) only, and a dense weight gets ``None`` (its layer density).
    """
    center_density = check_center_density(center_density)
    return center_density if len(tuple(shape)) > 2 else None


def check_engine(engine: Any) -> str:
    """Return ``engine`` if it names one of :data:`ENGINES`."""
    if not isinstance(engine, str) or engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    return engine


def check_mapping_density(distribution: Any, density: Any) -> None:
    """One rule for ``sparsify(model, density, distribution=mapping)`` in every adapter.

    A mapping of layer name to density gives every layer its density, so a
    model-wide ``density`` beside it would be ignored: it must be ``None``.
    """
    from collections.abc import Mapping

    if isinstance(distribution, Mapping) and density is not None:
        raise ValueError(
            "density must be None when distribution is a mapping of layer name to density "
            f"(the mapping gives every layer's density), got density={density!r}"
        )
