"""The reference engine: the executable specification, in plain NumPy.

It follows the paper step by step and favours clarity
over speed; the Numba engine must reproduce it exactly.

Givens phase, for an ``n x m`` block with ``n <= m``, ``n = min(out, in)``,
``m = max(out, in)``; the wide result ``G`` is the weight when ``out < in``
(orthonormal rows) and ``G^T`` is the weight when ``out >= in`` (orthonormal
columns; a square block is also built this way):

1. ``W = I_n`` padded with zero columns to ``n x m``; its support has ``n``
   entries.
2. Take the next rotation ``(i, j, theta)`` from the stream.  Rotating columns
   ``i`` and ``j`` gives both the union of their supports, so the support
   grows by ``|S_i| + |S_j|`` -> ``2 |S_i u S_j|``.
3. If that growth would take the support past ``budget``, stop (the rotation is
   not applied); otherwise apply it.  Also stop once the support equals the
   budget.  With ``budget=None`` exactly ``max_rotations`` rotations run.

Fill phase: the remaining budget becomes zero-valued trainable entries at
uniformly random zero positions of the block (:func:`fill`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .randomness import RotationStream

__all__ = ["write_givens", "fill"]


def _rotations(stream: RotationStream) -> Iterator[tuple[int, int, float, float]]:
    for first, second, cos, sin in stream:
        yield from zip(first.tolist(), second.tolist(), cos.tolist(), sin.tolist())


def givens_wide(
    rows: int, cols: int, budget: int | None, stream: RotationStream | None, max_rotations: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """Run the Givens phase on a wide ``rows x cols`` matrix (``rows <= cols``).

    Returns the float64 weight, its boolean support and the number of rotations applied.
    """
    weight = np.eye(rows, cols)
    support = weight != 0
    nnz = rows
    applied = 0
    limit = np.inf if max_rotations is None else max_rotations
    rotations = _rotations(stream) if stream is not None else iter(())
    while applied < limit and nnz != budget:
        i, j, cos, sin = next(rotations)
        union = support[:, i] | support[:, j]
        grown = 2 * int(union.sum()) - int(support[:, i].sum()) - int(support[:, j].sum())
        if budget is not None and nnz + grown > budget:
            break
        column_i, column_j = weight[:, i].copy(), weight[:, j].copy()
        weight[:, i] = cos * column_i - sin * column_j
        weight[:, j] = sin * column_i + cos * column_j
        support[:, i] = support[:, j] = union
        nnz += grown
        applied += 1
    return weight, support, applied


def write_givens(
    weight: np.ndarray,
    mask: np.ndarray,
    budget: int | None,
    stream: RotationStream | None,
    gain: float,
    max_rotations: int | None = None,
) -> tuple[int, int, np.ndarray | None]:
    """Write the Givens phase into the 2-D views ``weight`` and ``mask``.

    ``weight`` and ``mask`` have the canonical block shape ``(out, in)`` and
    are all zero on entry.  Returns ``(rotations applied, non-zeros written,
    row_support)``: ``row_support[r]`` counts the non-zeros of row ``r`` where
    an engine knows it for free (it lets :func:`fill` skip whole rows), else
    ``None``; here ``None``.
    """
    out, inp = weight.shape
    tall = out >= inp
    rows, cols = (inp, out) if tall else (out, inp)
    values, support, applied = givens_wide(rows, cols, budget, stream, max_rotations)
    if tall:
        values, support = values.T, support.T
    weight[...] = (gain * values).astype(weight.dtype)
    mask[...] = support
    return applied, int(support.sum()), None


def fill(flat_mask: np.ndarray, ranks: np.ndarray, row_support: np.ndarray | None = None) -> None:
    """Set the zero positions of rank ``ranks`` (row-major order) of ``flat_mask`` to True.

    ``row_support`` (the True count of each of ``len(row_support)`` equal rows,
    or ``None``) is a hint a fast engine may use; the result does not depend on it.
    """
    zeros = np.flatnonzero(~flat_mask)
    flat_mask[zeros[ranks]] = True
