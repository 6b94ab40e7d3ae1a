"""The orthogonality column of :func:`eoi_torch.sparsify`'s report.

``verify="probe"`` (default) and the check of ``verify`` are the core's
(:mod:`eoi_core.verify`, one definition for every adapter): a few random
probe vectors per orthogonal block, ``O(size)``, never a Gram matrix.
``verify="exact"`` forms the Gram matrices of the weight as stored (moved to
the CPU in float64, ``O(n^3)``) and reports ``max |H^T H - g^2 I| / g^2``;
``verify=None`` reports nothing.
"""

from __future__ import annotations

import numpy as np
import torch

import eoi_core
from eoi_core.verify import VERIFY, check_verify, probe_error

__all__ = ["VERIFY", "probe_error", "check_verify", "exact_error"]


def exact_error(weight: torch.Tensor, gain: float, groups: int) -> float:
    """``max |H^T H - g^2 I| / g^2`` over the blocks, in float64 (O(n^3))."""
    array = weight.detach().to("cpu", torch.float64).numpy()
    return eoi_core.orthogonality_error(np.ascontiguousarray(array), gain=gain, groups=groups, relative=True)
