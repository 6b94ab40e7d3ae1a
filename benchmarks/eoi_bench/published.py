"""The published EOI algorithm, re-implemented from the paper's description (the speed baseline).

Start from the identity (padded to ``n x m``, ``n <= m``); apply one random
Givens rotation at a time to a pair of distinct columns; after *every*
rotation count the non-zeros of the *whole* matrix (``numpy.count_nonzero``)
and stop as soon as the density reaches the target.  A rotation is applied to
its two columns only (O(n)), which is the most charitable reading; the
recount costs O(n m), so ``T`` rotations cost O(T n m) — about
``(m / 2) ln(d m)`` rotations for density ``d``.  Tall shapes are built wide
and transposed, as in the core.

Unlike the core, this stops at the first rotation that *reaches* the target
(it may overshoot it) and adds no fill entries; the work is the same order.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["published_eoi"]


def published_eoi(rows: int, cols: int, density: float, rng: np.random.Generator,
                  max_rotations: int | None = None) -> tuple[np.ndarray, int]:
    """Return ``(weight, rotations)``: a float64 ``rows x cols`` orthogonal matrix at density >= ``density``.

    ``max_rotations`` stops early (for timing a fixed number of rotations).
    """
    narrow, wide = min(rows, cols), max(rows, cols)
    weight = np.eye(narrow, wide)
    target = density * weight.size
    rotations = 0
    while np.count_nonzero(weight) < target and (max_rotations is None or rotations < max_rotations):
        i = int(rng.integers(wide))
        j = int(rng.integers(wide - 1))
        j += j >= i
        theta = rng.uniform(0.0, 2.0 * math.pi)
        cos, sin = math.cos(theta), math.sin(theta)
        column_i, column_j = weight[:, i].copy(), weight[:, j].copy()
        weight[:, i] = cos * column_i - sin * column_j
        weight[:, j] = sin * column_i + cos * column_j
        rotations += 1
    return (weight if rows <= cols else weight.T), rotations
