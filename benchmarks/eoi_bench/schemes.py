r"""Sparse initialisation schemes of the benchmarks, NumPy in and out, canonical ``(out, in)`` layout.

Thin positional wrappers ``(shape, density, gain, rng)`` over the public
schemes of :mod:`eoi_core.schemes` (float64), plus the benchmarks' own
``orthogonal-masked`` baseline.

Every scheme returns ``(weight, mask)`` for a dense layer of shape
``(out, in)``: ``mask`` is boolean with exactly ``eoi_core.mask_count(density,
out * in)`` True entries (the same budget as EOI, so that every scheme is
compared at the same per-layer density) and ``weight`` is float64, zero off
the mask.  ``gain`` is the scale ``g`` of each scheme:

``eoi``
    Exact Orthogonal Initialization (:func:`eoi_core.sparse_orthogonal`):
    ``W^T W = g^2 I`` (or ``W W^T``), exactly.
``kaiming``
    A uniformly random mask and Gaussian weights of standard deviation
    ``g / sqrt(in)`` (Kaiming scaling for the *dense* fan-in, so the
    effective variance shrinks with the density).
``kaiming-fanin``
    The same mask, each unit ``i`` scaled by its actual fan-in ``k_i``
    (the number of mask entries in row ``i``): standard deviation
    ``g / sqrt(k_i)`` (Evci et al. 2022, "Gradient flow in sparse neural
    networks").
``orthogonal-masked``
    A dense Haar-random orthogonal matrix times ``g`` (QR of a Gaussian matrix
    with the signs of ``diag(R)`` fixed), then masked at random: orthogonality
    is lost.
``ai``
    Approximate isometry (after Lee et al. 2019, "A signal propagation
    perspective for pruning neural networks at initialization"): the
    ``kaiming-fanin`` init, then gradient descent on
    ``||(W * M)(W * M)^T - I||_F^2`` (``(W * M)^T (W * M)`` for tall layers)
    over the masked entries, then times ``g``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

import eoi_core
from eoi_core import isometry, random_sparse
from eoi_core.isometry import isometry_loss

__all__ = [
    "TANH_CRITICAL_GAIN",
    "TANH_CRITICAL_BIAS_STD",
    "ACTIVATION_NAMES",
    "SCHEMES",
    "TRAINING_SCHEMES",
    "LABELS",
    "initialise",
    "random_mask",
    "eoi",
    "kaiming",
    "kaiming_fanin",
    "orthogonal_masked",
    "approximate_isometry",
]

Shape = tuple[int, int]

#: The critical point of a deep tanh network used by the paper (after Pennington
#: et al. 2017): sigma_w^2 = 1.05 (gain 1.0247), sigma_b^2 = 2.01e-5 (std 0.00448).
TANH_CRITICAL_GAIN = 1.0247
TANH_CRITICAL_BIAS_STD = 0.00448

#: Activations of the MLP benchmarks (implemented in :mod:`eoi_bench.models`).
ACTIVATION_NAMES = ("hardtanh", "linear", "relu", "tanh")


def random_mask(shape: Shape, density: float, rng: np.random.Generator) -> np.ndarray:
    """A boolean mask with exactly ``mask_count(density, size)`` True entries, uniformly placed."""
    return random_sparse.random_mask(shape, density, rng=rng)


def eoi(shape: Shape, density: float, gain: float, rng: np.random.Generator,
        angle: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """EOI from the core (raises ``ValueError`` below the orthogonal floor).

    ``angle`` fixes every Givens angle (radians; the angle study), ``None`` draws them uniformly.
    """
    return eoi_core.sparse_orthogonal(shape, density, gain=gain, rng=rng, dtype=np.float64, angle=angle)


def kaiming(shape: Shape, density: float, gain: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Random mask, ``N(0, g^2 / in)`` weights (:func:`eoi_core.random_sparse.kaiming`)."""
    return random_sparse.kaiming(shape, density, gain=gain, rng=rng, dtype=np.float64)


def kaiming_fanin(
    shape: Shape, density: float, gain: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Random mask, ``N(0, g^2 / k_i)`` weights, ``k_i`` the actual fan-in (:func:`eoi_core.random_sparse.kaiming_fanin`)."""
    return random_sparse.kaiming_fanin(shape, density, gain=gain, rng=rng, dtype=np.float64)


def _haar_orthogonal(shape: Shape, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random matrix with orthonormal rows or columns (the smaller side)."""
    rows, cols = shape
    gaussian = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(gaussian)
    q *= np.sign(np.diag(r))  # without the sign fix QR is not Haar-distributed
    return q if rows >= cols else q.T


def orthogonal_masked(
    shape: Shape, density: float, gain: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """A dense ``g``-scaled orthogonal matrix, masked at random."""
    mask = random_mask(shape, density, rng)
    return gain * _haar_orthogonal(shape, rng) * mask, mask


def approximate_isometry(
    shape: Shape,
    density: float,
    gain: float,
    rng: np.random.Generator,
    *,
    steps: int = 500,
    learning_rate: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Approximate isometry from the core (:func:`eoi_core.isometry.approximate_isometry`), float64."""
    return isometry.approximate_isometry(shape, density, gain=gain, rng=rng, dtype=np.float64,
                                         steps=steps, learning_rate=learning_rate)


Scheme = Callable[[Shape, float, float, np.random.Generator], tuple[np.ndarray, np.ndarray]]

SCHEMES: dict[str, Scheme] = {
    "eoi": eoi,
    "kaiming": kaiming,
    "kaiming-fanin": kaiming_fanin,
    "orthogonal-masked": orthogonal_masked,
    "ai": approximate_isometry,
}

#: The schemes the training benchmarks compare (AI is only in the spectrum study).
TRAINING_SCHEMES = ("eoi", "kaiming", "kaiming-fanin", "orthogonal-masked")

LABELS = {
    "eoi": "EOI (exact orthogonal)",
    "kaiming": "random sparse, Kaiming",
    "kaiming-fanin": "random sparse, Kaiming fan-in",
    "orthogonal-masked": "dense orthogonal, masked",
    "ai": "approximate isometry (AI)",
}


def initialise(
    scheme: str, shape: Shape, density: float, gain: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Dispatch to the scheme named ``scheme`` (one of :data:`SCHEMES`)."""
    if scheme not in SCHEMES:
        raise ValueError(f"scheme must be one of {sorted(SCHEMES)}, got {scheme!r}")
    return SCHEMES[scheme](shape, density, gain, rng)
