"""Numba kernels for :mod:`eoi_core.theory` (imported lazily: Numba is slow to import)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def _rates(width):
    rates = np.zeros(width + 2)
    for k in range(1, width + 1):
        rates[k] = 2.0 * k * (width - k) / (width * (width - 1.0))
    return rates


@njit(cache=True, nogil=True)
def _advance(p, q, rates, top):
    """One rotation: ``q = p P`` over ``k = 1..top`` (``top`` = highest reachable k); return growth."""
    growth = 0.0
    q[1] = p[1] * (1.0 - rates[1])
    for k in range(2, top + 1):
        q[k] = p[k] * (1.0 - rates[k]) + p[k - 1] * rates[k - 1]
    for k in range(1, top + 1):
        growth += p[k] * rates[k]
    return growth


@njit(cache=True, nogil=True)
def mean_support(width, targets):
    """``E[k_t]`` for each ``t`` in the sorted, unique ``targets``."""
    means = np.empty(targets.shape[0])
    rates = _rates(width)
    p = np.zeros(width + 2)
    q = np.zeros(width + 2)
    p[1] = 1.0
    mean = 1.0
    top = 1
    step = 0
    for index in range(targets.shape[0]):
        while step < targets[index]:
            top = min(top + 1, width)
            mean += _advance(p, q, rates, top)
            p, q = q, p
            step += 1
        means[index] = mean
    return means


@njit(cache=True, nogil=True)
def first_reaching(width, target_mean):
    """Smallest ``t`` with ``E[k_t] >= target_mean`` (``target_mean < width``)."""
    rates = _rates(width)
    p = np.zeros(width + 2)
    q = np.zeros(width + 2)
    p[1] = 1.0
    mean = 1.0
    top = 1
    step = 0
    while mean < target_mean:
        top = min(top + 1, width)
        growth = _advance(p, q, rates, top)
        if growth == 0.0:  # float64 cannot get closer to the target
            break
        mean += growth
        p, q = q, p
        step += 1
    return step
