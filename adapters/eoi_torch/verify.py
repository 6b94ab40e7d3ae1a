r"""The orthogonality column of :func:`sparsify`'s report, at a cost a model can afford.

``verify="probe"`` (default) multiplies each orthogonal block ``H`` (a group's
centre slice, ``out/g x in/g``) of the weight *as stored* by ``P`` Gaussian
probe vectors ``x`` and reports

.. math:: \max_x \frac{\lVert H^\top H x - g^2 x \rVert_\infty}{g^2 \lVert x \rVert_\infty}
          \quad (out \ge in; \ H H^\top x \text{ otherwise}),

two matrix-vector products per probe: ``O(P * size)``, never a Gram matrix.
Any deviation from ``H^T H = g^2 I`` shows up in a random probe with
probability one; the number is the relative error at the rounding of the
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
PROBES = 4


def check_verify(verify: object) -> object:
    """Return ``verify`` if it is one of :data:`VERIFY`, else raise ``ValueError``."""
    if verify not in VERIFY:
        raise ValueError(f"verify must be one of {VERIFY}, got {verify!r}")
    return verify


def _centre(weight: torch.Tensor) -> tuple:
    return (slice(None), slice(None)) + tuple((k - 1) // 2 for k in weight.shape[2:])


def probe_error(weight: torch.Tensor, gain: float, groups: int, *, probes: int = PROBES, seed: int = 0) -> float:
    """Relative probe error of a canonical-layout ``weight`` (see the module docstring).

    Examples
    --------
    >>> weight, _ = eoi_core.sparse_orthogonal((64, 32), 0.2, gain=2.0, rng=0)
    >>> probe_error(torch.from_numpy(weight), 2.0, 1) < 1e-5
    True
    >>> probe_error(torch.ones(4, 4), 1.0, 1) > 1
    True
    """
    compute = weight.dtype if weight.dtype in (torch.float32, torch.float64) else torch.float32
    generator = torch.Generator(device="cpu").manual_seed(seed)
    square = gain * gain
    worst = 0.0
    for block in weight.chunk(groups, dim=0):
        matrix = block[_centre(block)].to(compute)
        tall = matrix.shape[0] >= matrix.shape[1]
        width = matrix.shape[1] if tall else matrix.shape[0]
        x = torch.randn(width, probes, generator=generator, dtype=compute).to(matrix.device)
        y = matrix.T @ (matrix @ x) if tall else matrix @ (matrix.T @ x)
        error = ((y / square - x).abs().amax(0) / x.abs().amax(0)).max()
        worst = max(worst, float(error))
    return worst


def exact_error(weight: torch.Tensor, gain: float, groups: int) -> float:
    """``max |H^T H - g^2 I| / g^2`` over the blocks, in float64 (O(n^3))."""
    array = weight.detach().to("cpu", torch.float64).numpy()
    return eoi_core.orthogonality_error(np.ascontiguousarray(array), gain=gain, groups=groups, relative=True)
