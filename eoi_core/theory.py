r"""The density law of random Givens rotations (the paper's Theorem 1, re-derived).

Take a wide ``n x m`` matrix (``n <= m``; a tall one is its transpose) built
from ``I_n`` by random Givens rotations on pairs of distinct columns.  The
support size ``k`` of any one row is a Markov chain: a rotation on the pair
``(i, j)`` grows it by one exactly when one of ``i, j`` is in the support,

.. math::

    P(k \to k + 1) = \lambda_k = \frac{2 k (m - k)}{m (m - 1)}, \qquad
    P(k \to k) = 1 - \lambda_k, \qquad k_0 = 1.

Every row has this law, so the expected density after ``t`` rotations is
exactly :math:`E[k_t] / m`, independent of ``n``.  It is computed by evolving
the distribution of ``k`` (``O(m)`` per rotation, only over the ``k`` that can
be reached), with :math:`E[k_{t+1}] = E[k_t] + \sum_k p_t(k) \lambda_k`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .checks import check_fraction, check_int

__all__ = ["expected_density", "rotations_for_density"]


def _width(rows: Any, cols: Any) -> int:
    rows = check_int(rows, "rows")
    cols = check_int(cols, "cols")
    return max(rows, cols)


def expected_density(rows: int, cols: int, rotations: Any) -> float | np.ndarray:
    """Exact expected density of ``rows x cols`` after ``rotations`` random Givens rotations.

    Parameters
    ----------
    rows, cols : int
        Matrix shape.
    rotations : int or array of int
        Number(s) of rotations ``t >= 0``; one pass serves all of them.

    Returns
    -------
    float or ndarray of float
        ``E[k_t] / max(rows, cols)``, shaped like ``rotations``.

    Examples
    --------
    >>> expected_density(4, 4, 0)
    0.25
    """
    width = _width(rows, cols)
    steps = np.asarray(rotations)
    if steps.dtype == bool or not np.issubdtype(steps.dtype, np.integer):
        raise TypeError(f"rotations must be an integer or an array of integers, got {rotations!r}")
    if np.any(steps < 0):
        raise ValueError(f"rotations must be >= 0, got {rotations!r}")
    if width == 1:
        return np.ones(steps.shape)[()] if steps.ndim else 1.0
    from ._chain import mean_support

    targets, inverse = np.unique(steps.ravel().astype(np.int64), return_inverse=True)
    means = mean_support(width, targets)[inverse].reshape(steps.shape)
    density = means / width
    return float(density) if density.ndim == 0 else density


def rotations_for_density(rows: int, cols: int, density: float) -> int:
    """Smallest number of rotations whose expected density reaches ``density``.

    ``density`` must lie in ``(0, 1)``: the expected density tends to 1 only
    asymptotically.  Densities at or below the start, ``1 / max(rows, cols)``,
    need 0 rotations.

    Examples
    --------
    >>> rotations_for_density(4, 4, 0.25)
    0
    """
    width = _width(rows, cols)
    density = check_fraction(density, "density")
    if density >= 1.0:
        raise ValueError(
            "density must be < 1 for rotations_for_density: the expected density after t "
            "rotations approaches 1 only asymptotically"
        )
    if density * width <= 1.0:
        return 0
    from ._chain import first_reaching

    return int(first_reaching(width, density * width))
