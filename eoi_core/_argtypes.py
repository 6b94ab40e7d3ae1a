"""``argparse`` types that reject bad values with a message naming what is allowed.

Each function takes the command-line string and returns the parsed value or
raises :class:`argparse.ArgumentTypeError`, which ``argparse`` turns into a
``usage: ... error: ...`` message and exit status 2 (never a traceback).
The ``eoi`` command and the benchmarks share them.

>>> fraction("0.25")
0.25
>>> positive_int("0")
Traceback (most recent call last):
...
argparse.ArgumentTypeError: expected an integer >= 1, got '0'
"""

from __future__ import annotations

import argparse
import math

__all__ = ["positive_int", "nonnegative_int", "fraction", "positive_float", "nonnegative_float",
           "sparsity", "degrees"]


def _number(text: str, kind: type) -> float | int:
    try:
        return kind(text)
    except ValueError:
        name = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"expected {name}, got {text!r}") from None


def positive_int(text: str) -> int:
    """An integer >= 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _finite(text: str) -> float:
    value = _number(text, float)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def fraction(text: str) -> float:
    """A density: a number in (0, 1]."""
    value = _finite(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a density in (0, 1], got {text!r}")
    return value


def sparsity(text: str) -> float:
    """A sparsity: a number in [0, 1)."""
    value = _finite(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a sparsity in [0, 1), got {text!r}")
    return value


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _finite(text)
    if value <= 0.0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number >= 0."""
    value = _finite(text)
    if value < 0.0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, got {text!r}")
    return value


def degrees(text: str) -> float | None:
    """A rotation angle in degrees, or ``uniform`` (returned as ``None``)."""
    if text.strip().lower() == "uniform":
        return None
    return _finite(text)
