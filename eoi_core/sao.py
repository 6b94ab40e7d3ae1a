r"""Sparsity-Aware Orthogonal initialization (SAO; Esguerra et al. 2023).

SAO builds the mask first, as a biregular bipartite graph between the
``rows = min(out, in)`` units of the smaller side and the ``cols = max(out,
in)`` units of the larger one, then puts orthogonal values on it.  For a
*degree* ``d`` (non-zeros per row of the wide ``rows x cols`` matrix):

1. the ``cols`` columns are split at random into ``cols / d`` disjoint sets
   of ``d`` columns each;
2. the rows are split at random into the same number of sets of
   ``a = rows * d / cols`` rows, one per column set;
3. the ``a`` rows of a set take ``a`` rows of an independent Haar-random
   ``d x d`` orthogonal matrix, on that set's ``d`` columns.

Rows in different sets have disjoint supports and rows in one set are
orthonormal, so the wide matrix ``W`` satisfies ``W W^T = g^2 I`` exactly;
a tall layer (``out > in``) gets the transpose, ``W^T W = g^2 I``.  Every row
has ``d`` non-zeros and every column ``a``: the graph is ``(d, a)``-biregular
(a disjoint union of complete bipartite graphs ``K_{a, d}``, as in the
authors' construction).

**Density constraints.**  The mask holds exactly ``rows * d`` entries, so SAO
can only produce the densities ``rows * d / size`` with ``d`` dividing
``cols`` and ``cols`` dividing ``rows * d``; the smallest is
``d = cols / gcd(rows, cols)``, which is the orthogonal floor ``rows / size``
(``a = 1``) when ``rows`` divides ``cols``.  A density whose mask count
(:func:`eoi_core.mask_count`) is not one of these is an error naming the
nearest feasible densities; :func:`feasible_densities` lists them all.

**Convolutions** (SAO-Delta): the whole budget sits on the spatial centre,
which holds the SAO matrix; every other tap is zero *and* outside the mask
(SAO has no trainable off-centre entries).  So a kernel of ``K`` taps can
only reach densities up to ``1 / K``, and ``center_density`` (EOI's split
between centre and fill) does not apply.  Grouped layers get one independent
SAO per group block.  The ReLU variant of the paper (a ``[[W, -W], [-W, W]]``
doubling) is not built here.
"""

from __future__ import annotations

import bisect
from typing import Any, Sequence

import numpy as np

from .checks import check_density, check_gain
from .dtypes import check_gain_representable, resolve_dtype
from .layout import Layout, mask_count, parse_layout
from .randomness import as_generator, split

__all__ = ["sao", "feasible_densities", "nearest_density", "nearest_densities", "haar_orthogonal"]


def haar_orthogonal(size: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random ``size x size`` orthogonal matrix (QR of a Gaussian, signs of ``diag(R)`` fixed)."""
    q, r = np.linalg.qr(rng.standard_normal((size, size)))
    return q * np.sign(np.diag(r))  # without the sign fix QR is not Haar-distributed


def _degrees(layout: Layout) -> list[int]:
    """Feasible degrees ``d``: ``d`` divides ``cols`` and ``cols`` divides ``rows * d``."""
    rows = min(layout.out_per_group, layout.in_per_group)
    cols = max(layout.out_per_group, layout.in_per_group)
    return [d for d in range(1, cols + 1) if cols % d == 0 and (rows * d) % cols == 0]


def _densities(layout: Layout) -> list[float]:
    rows = min(layout.out_per_group, layout.in_per_group)
    return [rows * d / layout.block_size for d in _degrees(layout)]


def feasible_densities(shape: Sequence[int], groups: int = 1) -> list[float]:
    """Every density SAO can produce for ``shape``, ascending.

    Examples
    --------
    >>> feasible_densities((8, 4))  # d in {2, 4, 8}: d = 1 would give half a row per column set
    [0.25, 0.5, 1.0]
    >>> feasible_densities((16, 16, 3, 3))[:3]
    [0.006944444444444444, 0.013888888888888888, 0.027777777777777776]
    """
    return _densities(parse_layout(shape, groups))


def nearest_density(shape: Sequence[int], density: float, groups: int = 1) -> float:
    """The feasible SAO density closest to ``density`` (the lower one on a tie).

    Examples
    --------
    >>> nearest_density((64, 64), 0.1)
    0.125
    """
    density = check_density(density)
    options = feasible_densities(shape, groups)
    return min(options, key=lambda option: (abs(option - density), option))


def nearest_densities(
    shapes: Sequence[Sequence[int]],
    density: float,
    *,
    names: Sequence[str] | None = None,
    groups: Sequence[int] | None = None,
) -> list[float]:
    """A distribution for SAO: every layer at the feasible density nearest to ``density``.

    Has the signature of a distribution callable, so any adapter's ``sparsify``
    accepts it (``distribution=eoi_core.sao.nearest_densities``).  SAO's
    constraints make the model-wide weighted mean only approximately
    ``density`` (each layer rounds on its own); the report shows what was used.

    Examples
    --------
    >>> nearest_densities([(64, 64), (64, 64, 3)], 0.1)
    [0.125, 0.08333333333333333]
    """
    groups = [1] * len(shapes) if groups is None else list(groups)
    return [nearest_density(shape, density, g) for shape, g in zip(shapes, groups)]


def _degree(layout: Layout, density: float) -> int:
    rows = min(layout.out_per_group, layout.in_per_group)
    count = mask_count(density, layout.block_size)
    degrees = _degrees(layout)
    if count % rows == 0 and count // rows in degrees:
        return count // rows
    options = _densities(layout)
    at = bisect.bisect_left(options, density)
    nearest = [f"{value:.6g}" for value in options[max(at - 1, 0): at + 1]]
    raise ValueError(
        f"density={density!r} is not a density SAO can produce for shape {layout.shape} with "
        f"groups={layout.groups}: its mask holds rows * d entries ({rows} * d per group) with the "
        f"degree d dividing {max(layout.out_per_group, layout.in_per_group)} (and a whole number of "
        f"rows per column set), but the density gives {count}; nearest feasible densities: "
        f"{' or '.join(nearest)} (all of them: eoi_core.sao.feasible_densities)"
    )


def _wide(rows: int, cols: int, degree: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The SAO matrix of a wide ``rows x cols`` block (``rows <= cols``), float64, unit gain, and its mask."""
    sets = cols // degree
    per_set = rows * degree // cols
    column_sets = rng.permutation(cols).reshape(sets, degree)
    row_sets = rng.permutation(rows).reshape(sets, per_set)
    weight = np.zeros((rows, cols))
    support = np.zeros((rows, cols), dtype=bool)
    for row_set, column_set in zip(row_sets, column_sets):
        weight[np.ix_(row_set, column_set)] = haar_orthogonal(degree, rng)[:per_set]
        support[np.ix_(row_set, column_set)] = True  # the structure, not `weight != 0`
    return weight, support


def sao(
    shape: Sequence[int],
    density: float,
    *,
    gain: float = 1.0,
    dtype: Any = np.float32,
    rng: Any = None,
    groups: int = 1,
    center_density: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    r"""SAO: an expander-graph mask with exactly orthogonal values.

    Parameters
    ----------
    shape : sequence of int
        Canonical shape ``(out, in)`` or ``(out, in // groups, *kernel)``.
    density : float in (0, 1]
        Must be one of :func:`feasible_densities` (up to the mask rounding
        rule): ``min(out, in) * d / size`` per group block.
    gain, dtype, rng, groups
        As in :func:`eoi_core.sparse_orthogonal`.
    center_density : None
        Must be ``None``: SAO's whole budget is the centre.

    Returns
    -------
    weight, mask : ndarrays of ``shape``
        ``W W^T = g^2 I`` (``W^T W`` for tall blocks) on each group block's
        centre slice; ``mask`` is exactly the support: ``rows * d`` entries
        per block, ``d`` per row of the wide block and ``a = rows * d / cols``
        per column.

    Raises
    ------
    ValueError
        For a density SAO cannot produce (naming the nearest feasible ones),
        a ``center_density`` or any argument :func:`sparse_orthogonal` rejects.

    Examples
    --------
    >>> weight, mask = sao((64, 32), 0.125, rng=0, dtype=np.float64)
    >>> int(mask.sum()), sorted(set(mask.sum(axis=0).tolist()))  # 32 * 8 entries, 8 per input
    (256, [8])
    >>> bool(np.allclose(weight.T @ weight, np.eye(32)))
    True
    >>> sao((64, 32), 0.1)
    Traceback (most recent call last):
    ...
    ValueError: density=0.1 is not a density SAO can produce ... nearest feasible densities: 0.0625 or 0.125 ...
    """
    layout = parse_layout(shape, groups)
    density = check_density(density)
    gain = check_gain(gain)
    dtype = resolve_dtype(dtype)
    check_gain_representable(gain, dtype)
    if center_density is not None:
        raise ValueError(
            f"center_density={center_density!r} does not apply to SAO: its whole mask is the "
            "orthogonal centre (no trainable off-centre entries); pass center_density=None"
        )
    degree = _degree(layout, density)
    rows = min(layout.out_per_group, layout.in_per_group)
    cols = max(layout.out_per_group, layout.in_per_group)
    tall = layout.out_per_group > layout.in_per_group

    weight = np.zeros(layout.shape, dtype=dtype)
    mask = np.zeros(layout.shape, dtype=bool)
    centre = layout.centre_index()
    for group, child in enumerate(split(as_generator(rng), layout.groups)):
        block, support = _wide(rows, cols, degree, child)
        if tall:
            block, support = block.T, support.T
        weight[layout.block(group)][centre] = (gain * block).astype(dtype)
        mask[layout.block(group)][centre] = support
    return weight, mask
