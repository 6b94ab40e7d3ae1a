r"""The orthogonality column of :func:`sparsify`'s report, at a cost a model can afford.

``verify="probe"`` (default) multiplies each orthogonal block ``H`` (a group's
centre slice, ``out/g x in/g``) of the weight *as stored* by ``P`` (default 1)
Gaussian probe vectors ``x`` and reports

.. math:: \max_x \frac{\lVert H^\top H x - g^2 x \rVert_\infty}{g^2 \lVert x \rVert_\infty}
          \quad (out \ge in; \ H H^\top x \text{ otherwise}),

two matrix-vector products per probe: ``O(P * size)``, never a Gram matrix.
A Gaussian ``x`` lies in the null space of ``H^T H - g^2 I`` with probability
zero, so any deviation shows up (its size is a lower bound of the spectral
norm of the deviation, typically within a factor ``sqrt(n)`` of it); the number is the relative error at the rounding of the
layer's dtype (computed in that dtype, float32 for half precision).
``verify="exact"`` forms the Gram matrices (:func:`eoi_core.orthogonality_error`,
``O(out * in * min(out, in))`` in float64) and reports ``max |H^T H - g^2 I| / g^2``;
``verify=None`` reports nothing.
"""

from __future__ import annotations

import numpy as np
import torch

import eoi_core

__all__ = ["VERIFY", "probe_error", "check_verify"]

VERIFY = ("probe", "exact", None)
PROBES = 1


def check_verify(verify: object) -> object:
    """Return ``verify`` if it is one of :data:`VERIFY`, else raise ``ValueError``."""
    if verify not in VERIFY:
        raise ValueError(f"verify must be one of {VERIFY}, got {verify!r}")
    return verify


def _centre(shape: tuple[int, ...]) -> tuple:
    return (slice(None), slice(None)) + tuple((k - 1) // 2 for k in shape[2:])


def probe_error(weight: np.ndarray, gain: float, groups: int, *, probes: int = PROBES, seed: int = 0) -> float:
    """Relative probe error of a canonical-layout ``weight`` (see the module docstring).

    NumPy only (no torch call), so that :func:`eoi_torch.sparsify` can run it
    in the thread that generated the layer.

    Examples
    --------
    >>> weight, _ = eoi_core.sparse_orthogonal((64, 32), 0.2, gain=2.0, rng=0)
    >>> probe_error(weight, 2.0, 1) < 1e-5
    True
    >>> probe_error(np.ones((4, 4)), 1.0, 1) > 1
    True
    """
    weight = np.asarray(weight)
    compute = weight.dtype if weight.dtype in (np.float32, np.float64) else np.dtype(np.float32)
    generator = np.random.default_rng(seed)
    square = gain * gain
    worst = 0.0
    for block in np.split(weight, groups, axis=0):
        matrix = block[_centre(block.shape)].astype(compute, copy=False)
        tall = matrix.shape[0] >= matrix.shape[1]
        width = matrix.shape[1] if tall else matrix.shape[0]
        for _ in range(probes):
            x = generator.standard_normal(width).astype(compute)
            # einsum without `optimize` runs on the calling thread, never waking a BLAS pool: cheaper
            # than a multi-threaded gemv for one pass over H, and the layer threads already share
            # the cores.  x^T H rather than H^T x reads H along its rows.
            if tall:
                y = np.einsum("i,ij->j", np.einsum("ij,j->i", matrix, x), matrix)
            else:
                y = np.einsum("ij,j->i", matrix, np.einsum("i,ij->j", x, matrix))
            worst = max(worst, float(np.abs(y / square - x).max() / np.abs(x).max()))
    return worst


def exact_error(weight: torch.Tensor, gain: float, groups: int) -> float:
    """``max |H^T H - g^2 I| / g^2`` over the blocks, in float64 (O(n^3))."""
    array = weight.detach().to("cpu", torch.float64).numpy()
    return eoi_core.orthogonality_error(np.ascontiguousarray(array), gain=gain, groups=groups, relative=True)
