"""Numba kernels for :mod:`eoi_core.theory` (imported lazily: Numba is slow to import).

The distribution ``p`` of the support size ``k`` is advanced one rotation at a
time by ``q[k] = p[k] (1 - l_k) + p[k - 1] l_{k-1}``: a stream with no
reduction, which the compiler vectorises.  The mean is taken only where it is
asked for.  States above the highest one holding mass >= ``TAIL`` are not
visited: the upper tail of ``k`` is geometric, so what is left out changes the
mean by far less than float64 rounding.
"""

from __future__ import annotations

import numpy as np

from ._jit import jit

TAIL = 1e-60
CHECKPOINT = 256


@jit(nogil=True)
def _chain(width):
    stay = np.ones(width + 2)
    move = np.zeros(width + 2)  # move[k] = l_{k-1}: the rate into k
    for k in range(1, width + 1):
        rate = 2.0 * k * (width - k) / (width * (width - 1.0))
        stay[k] = 1.0 - rate
        move[k + 1] = rate
    p = np.zeros(width + 2)
    p[1] = 1.0
    return stay, move, p


@jit(nogil=True)
def _step(p, q, stay, move, top, width):
    """One rotation from ``p`` into ``q``; return the new ``top``.

    Only ``p[:top + 1]`` is read: entries above ``top`` may be stale.
    """
    for k in range(1, top + 1):
        q[k] = p[k] * stay[k] + p[k - 1] * move[k]
    if top < width:
        top += 1
        q[top] = p[top - 1] * move[top]
    while top > 1 and q[top] < TAIL:
        q[top] = 0.0
        top -= 1
    return top


@jit(nogil=True)
def _mean(p, top):
    total = 0.0
    for k in range(1, top + 1):
        total += k * p[k]
    return total


@jit(nogil=True)
def mean_support(width, targets):
    """``E[k_t]`` for each ``t`` in the sorted, unique ``targets``."""
    stay, move, p = _chain(width)
    q = np.zeros(width + 2)
    means = np.empty(targets.shape[0])
    top = 1
    step = 0
    for index in range(targets.shape[0]):
        while step < targets[index]:
            top = _step(p, q, stay, move, top, width)
            p, q = q, p
            step += 1
        means[index] = _mean(p, top)
    return means


@jit(nogil=True)
def first_reaching(width, target_mean):
    """Smallest ``t`` with ``E[k_t] >= target_mean`` (``target_mean < width``).

    Advances in chunks of ``CHECKPOINT`` rotations, keeping the distribution at
    the start of each chunk; the chunk that crosses the target is replayed
    one rotation at a time.
    """
    stay, move, p = _chain(width)
    q = np.zeros(width + 2)
    saved = p.copy()
    top = 1
    step = 0
    while _mean(p, top) < target_mean:
        saved[: top + 1] = p[: top + 1]
        saved_top = top
        for _ in range(CHECKPOINT):
            top = _step(p, q, stay, move, top, width)
            p, q = q, p
        step += CHECKPOINT
        if _mean(p, top) >= target_mean:
            p[:] = 0.0
            p[: saved_top + 1] = saved[: saved_top + 1]
            q[:] = 0.0
            top = saved_top
            step -= CHECKPOINT
            while _mean(p, top) < target_mean:
                top = _step(p, q, stay, move, top, width)
                p, q = q, p
                step += 1
            return step
    return step
