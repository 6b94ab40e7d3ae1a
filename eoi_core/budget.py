"""How a layer's mask budget is split between the orthogonal centre and the fill.

Per group block of ``b = floor(density * block_size + 0.5)`` trainable entries
(:func:`eoi_core.layout.mask_count`), the centre ``H`` (an ``out/g x in/g``
sparse orthogonal matrix at the spatial centre of the kernel) gets ``h``:

* ``center_density=None`` (the paper's base variant): ``H`` at the layer
  density, ``h = round(density * out/g * in/g)``;
* ``center_density="sqrt"`` (the paper's second variant):
  ``h = round(min(1, density * K, sqrt(density)) * out/g * in/g)``;
* a float ``c``: ``h = round(c * out/g * in/g)``, which must fit: at least
  the orthogonal floor ``min(out/g, in/g)`` and at most ``b``.  Kernels only:
  a rank-2 weight has no taps (its whole matrix is the centre), so a float
  there is an error; ``"sqrt"`` there equals the density.

The named policies are raised to the floor when they would give less (a
sparse orthogonal matrix cannot have fewer non-zeros) and capped at ``b``.
The Givens phase stops at ``h``; the rest of ``b`` is filled with
zero-valued trainable entries anywhere in the block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from .checks import CENTER_POLICIES, check_center_density
from .layout import Layout, accepted_min_density, mask_count

__all__ = ["Budget", "plan_budget", "CENTER_POLICIES"]


@dataclass(frozen=True)
class Budget:
    """Trainable entries per group block (``block``) and for its centre (``centre``)."""

    block: int
    centre: int


def _infeasible(layout: Layout, density: float, block: int) -> ValueError:
    return ValueError(
        f"density={density!r} is infeasible for shape {layout.shape} with groups={layout.groups}: "
        f"an exactly orthogonal block needs at least min(out/g, in/g) = {layout.floor} non-zeros "
        f"out of {layout.block_size} per group, but the density gives {block} "
        f"(floor(density * {layout.block_size} + 0.5)); densities from "
        f"{accepted_min_density(layout):.6g} up are accepted "
        f"(min_density = {layout.floor / layout.block_size:.6g} gives exactly {layout.floor})"
    )


def plan_budget(layout: Layout, density: float, center_density: Any = None) -> Budget:
    """Split ``density``'s budget per block between centre and fill (see module docstring)."""
    center_density = check_center_density(center_density)
    if len(layout.shape) == 2 and isinstance(center_density, float):
        raise ValueError(
            f"center_density={center_density!r} applies to convolution kernels only: a dense weight "
            f"{layout.shape} has no kernel taps, its whole matrix is the centre (use density alone, "
            "or center_density=None)"
        )
    block = mask_count(density, layout.block_size)
    if block < layout.floor:
        raise _infeasible(layout, density, block)
    centre_size = layout.out_per_group * layout.in_per_group
    if center_density is None or isinstance(center_density, str):
        if center_density is None:
            fraction = density
        else:  # "sqrt", the only policy (checked above)
            fraction = min(1.0, density * layout.taps, math.sqrt(density))
        centre = min(max(mask_count(fraction, centre_size), layout.floor), block)
        return Budget(block, centre)
    fraction = center_density
    centre = mask_count(fraction, centre_size)
    if not layout.floor <= centre <= block:
        raise ValueError(
            f"center_density={center_density!r} gives the centre {centre} non-zeros, but for shape "
            f"{layout.shape} with groups={layout.groups} and density={density!r} it must hold between "
            f"min(out/g, in/g) = {layout.floor} and the block budget {block} "
            f"(center_density in [{layout.floor / centre_size:.6g}, {min(1.0, block / centre_size):.6g}])"
        )
    return Budget(block, centre)
