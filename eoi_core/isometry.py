r"""Approximate isometry (AI; Lee et al. 2019, "A signal propagation perspective for pruning").

A random sparse matrix pushed towards orthogonality by gradient descent on
its masked entries.  For a wide ``A`` (``out <= in``) the loss is

.. math:: L(A) = \|A A^\top - I\|_F^2, \qquad \nabla L = 4\,(A A^\top - I)\,A,

(``A^T A`` for a tall ``A``), the gradient is multiplied by the mask so the
support never grows, and a step that would increase the loss is rejected
and the step size halved (with few inputs per unit the start can have a large
spectral norm, where a fixed step would overshoot and diverge).  The start is
``kaiming_fanin`` at unit gain (:mod:`eoi_core.random_sparse`), the result is
scaled by ``gain``, everything runs in float64 and is cast once.

Unlike EOI the result is only approximately orthogonal, and at high sparsity
the random mask may admit no isometry at all (a row or column with no entry).

Convolutions follow the delta embedding of EOI: the budget of each group
block is split between the centre and the rest of the kernel exactly as EOI
splits it (:mod:`eoi_core.budget`, ``center_density`` included), the centre's
share gets a random mask and the descent above, and the remaining entries are
trainable zeros at random positions of the block.  Densities below the
orthogonal floor are an error, as for EOI.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .budget import plan_budget
from .checks import check_density, check_fraction, check_gain, check_int
from .dtypes import check_gain_representable, resolve_dtype
from .layout import parse_layout
from .randomness import as_generator

__all__ = ["approximate_isometry", "isometry_loss", "descend"]


def isometry_loss(weight: np.ndarray) -> float:
    """``||G - I||_F^2`` with ``G`` the Gram matrix of the smaller side of a 2-D ``weight``.

    Examples
    --------
    >>> isometry_loss(np.eye(3)[:2])
    0.0
    """
    gram = weight @ weight.T if weight.shape[0] <= weight.shape[1] else weight.T @ weight
    return float(np.sum((gram - np.eye(gram.shape[0])) ** 2))


def descend(weight: np.ndarray, mask: np.ndarray, steps: int, learning_rate: float) -> np.ndarray:
    """``steps`` masked gradient steps on ``||A A^T - I||_F^2`` (see the module docstring); float64."""
    wide = weight.shape[0] <= weight.shape[1]
    matrix = np.array(weight if wide else weight.T, dtype=np.float64)
    support = mask if wide else mask.T
    identity = np.eye(matrix.shape[0])
    residual = matrix @ matrix.T - identity
    loss = float(np.sum(residual**2))
    rate = learning_rate
    for _ in range(steps):
        trial = matrix - rate * (4.0 * (residual @ matrix) * support)
        trial_residual = trial @ trial.T - identity
        trial_loss = float(np.sum(trial_residual**2))
        if trial_loss > loss:
            rate *= 0.5
            continue
        matrix, residual, loss = trial, trial_residual, trial_loss
    return matrix if wide else matrix.T


def _start(rows: int, cols: int, count: int, generator: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random ``count``-entry mask and ``kaiming_fanin`` values at unit gain (same draws as that scheme)."""
    size = rows * cols
    flat = np.zeros(size, dtype=bool)
    flat[generator.choice(size, size=count, replace=False)] = True
    mask = flat.reshape(rows, cols)
    fan_in = np.maximum(mask.sum(axis=1, keepdims=True), 1)
    weight = generator.standard_normal((rows, cols)) * (1.0 / np.sqrt(fan_in))
    return weight * mask, mask


def approximate_isometry(
    shape: Sequence[int],
    density: float,
    *,
    gain: float = 1.0,
    dtype: Any = np.float32,
    rng: Any = None,
    groups: int = 1,
    center_density: float | str | None = None,
    steps: int = 500,
    learning_rate: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    r"""Random sparse init pushed towards isometry by masked gradient descent.

    Parameters
    ----------
    shape, density, gain, dtype, rng, groups, center_density
        As in :func:`eoi_core.sparse_orthogonal` (same budget, same floor).
    steps : int, optional
        Gradient steps (accepted or rejected) per group block; 0 gives the
        ``kaiming_fanin`` start (on the centre, for kernels).
    learning_rate : float in (0, 1], optional
        First step size; halved at every rejected step.

    Returns
    -------
    weight, mask : ndarrays of ``shape``
        ``mask`` has exactly ``mask_count(density, block_size)`` entries per
        group block; the weight is non-zero only on the centre's share of it.

    Examples
    --------
    >>> weight, mask = approximate_isometry((32, 32), 0.8, rng=0, dtype=np.float64)
    >>> int(mask.sum()), isometry_loss(weight) < 1e-12
    (819, True)
    """
    layout = parse_layout(shape, groups)
    density = check_density(density)
    gain = check_gain(gain)
    dtype = resolve_dtype(dtype)
    check_gain_representable(gain, dtype)
    steps = check_int(steps, "steps", minimum=0)
    learning_rate = check_fraction(learning_rate, "learning_rate")
    budget = plan_budget(layout, density, center_density)
    generator = as_generator(rng)

    weight = np.zeros(layout.shape)
    mask = np.zeros(layout.shape, dtype=bool)
    centre = layout.centre_index()
    rows, cols = layout.out_per_group, layout.in_per_group
    for group in range(layout.groups):
        block_weight, block_mask = weight[layout.block(group)], mask[layout.block(group)]
        start, support = _start(rows, cols, budget.centre, generator)
        block_weight[centre] = gain * descend(start, support, steps, learning_rate)
        block_mask[centre] = support
        rest = budget.block - budget.centre
        if rest:  # kernels: trainable zeros anywhere off the centre's mask
            free = np.flatnonzero(~block_mask.reshape(-1))
            block_mask.reshape(-1)[generator.choice(free, size=rest, replace=False)] = True
    return weight.astype(dtype, copy=False), mask
