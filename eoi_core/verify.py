r"""The orthogonality column of a ``sparsify`` report, at a cost a model can afford (NumPy weights).

``verify="probe"`` (default) multiplies each orthogonal block ``H`` (a
block's centre slice, ``out/g x in/g`` in the canonical layout) of the weight
as stored by ``P`` Gaussian probe vectors ``x`` and reports

.. math:: \max_x \frac{\lVert H^\top H x - g^2 x \rVert_\infty}{g^2 \lVert x \rVert_\infty}
          \quad (out \ge in; \ H H^\top x \text{ otherwise}),

two matrix-vector products per probe, batched over the blocks: ``O(P *
size)``, never a Gram matrix (``P = 1`` by default).  A deviation from ``H^T H = g^2 I`` shows up
in a random probe with probability one.  ``verify="exact"`` forms the Gram
matrices (:func:`eoi_core.orthogonality_error`, ``O(n^3)``); ``verify=None``
reports nothing.  Every adapter's report uses this module (PyTorch,
Keras and JAX all write weights generated as NumPy arrays).
"""

from __future__ import annotations

import numpy as np

from .api import orthogonality_error

__all__ = ["VERIFY", "check_verify", "probe_error", "orthogonality"]

VERIFY = ("probe", "exact", None)
PROBES = 1


def check_verify(verify: object) -> object:
    """Return ``verify`` if it is one of :data:`VERIFY`, else raise ``ValueError``."""
    if verify not in VERIFY:
        raise ValueError(f"verify must be one of {VERIFY}, got verify={verify!r}")
    return verify


def probe_error(weight: np.ndarray, gain: float, groups: int, *, probes: int = PROBES, seed: int = 0) -> float:
    """Relative probe error of a canonical ``weight`` (see the module docstring).

    Cost: ``2 * probes`` passes over the weight, on the calling thread (NumPy's
    ``einsum`` loops, no BLAS pool: adapters run this in their layer threads,
    where a multi-threaded BLAS call per layer would only oversubscribe the cores).

    Examples
    --------
    >>> import eoi_core
    >>> weight, _ = eoi_core.sparse_orthogonal((64, 32, 3, 3), 0.2, gain=2.0, groups=4, rng=0)
    >>> probe_error(weight, 2.0, 4) < 1e-5
    True
    >>> probe_error(np.ones((4, 4)), 1.0, 1) > 1
    True
    """
    weight = np.asarray(weight)
    compute = np.float64 if weight.dtype == np.float64 else np.float32
    centre = (slice(None), slice(None)) + tuple((k - 1) // 2 for k in weight.shape[2:])
    matrix = np.asarray(weight[centre], dtype=compute)
    blocks = matrix.reshape(groups, matrix.shape[0] // groups, matrix.shape[1])
    tall = blocks.shape[1] >= blocks.shape[2]
    # Tall blocks: H^T (H x); wide: H (H^T x), written so that both read H along its rows.
    inner, outer = ("gij,gjp->gip", "gij,gip->gjp") if tall else ("gij,gip->gjp", "gij,gjp->gip")
    width = blocks.shape[2] if tall else blocks.shape[1]
    x = np.random.default_rng(seed).standard_normal((groups, width, probes)).astype(compute)
    y = np.einsum(outer, blocks, np.einsum(inner, blocks, x))
    return float((np.abs(y / (gain * gain) - x).max(axis=1) / np.abs(x).max(axis=1)).max())


def orthogonality(weight: np.ndarray, gain: float, groups: int, verify: object) -> float | None:
    """The report's orthogonality error of a canonical ``weight`` for ``verify``."""
    if verify is None:
        return None
    if verify == "probe":
        return probe_error(weight, gain, groups)
    return orthogonality_error(np.asarray(weight, dtype=np.float64), gain=gain, groups=groups, relative=True)
