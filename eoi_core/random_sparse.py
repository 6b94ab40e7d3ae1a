r"""Random sparse baselines: a uniformly random mask with Kaiming-scaled Gaussian values.

Both schemes draw, per group block of ``b = block_size`` entries, a mask with
exactly ``mask_count(density, b)`` True entries placed uniformly at random
(the same budget as EOI, so that schemes are compared at the same per-layer
density), then Gaussian values on it:

``kaiming``
    standard deviation ``g / sqrt(fan_in)`` with ``fan_in = in/g * K`` the
    fan-in of the *dense* layer (``K`` kernel taps), as
    ``torch.nn.init.kaiming_normal_`` would use; the effective variance of a
    unit's pre-activation therefore shrinks with the density.
``kaiming_fanin``
    standard deviation ``g / sqrt(k_i)`` with ``k_i`` the number of mask
    entries of output unit ``i`` (its actual fan-in; Evci et al. 2022,
    "Gradient flow in sparse neural networks"); a unit with no inputs has no
    weights.

There is no orthogonal structure and so no orthogonal floor: any density in
``(0, 1]`` is accepted, and ``center_density`` (a kernel-centre option of the
orthogonal schemes) must be ``None``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .checks import check_density, check_gain
from .dtypes import check_gain_representable, resolve_dtype
from .layout import Layout, mask_count, parse_layout
from .randomness import as_generator

__all__ = ["random_mask", "kaiming", "kaiming_fanin"]


def _check_no_centre(center_density: Any, scheme: str) -> None:
    if center_density is not None:
        raise ValueError(
            f"center_density={center_density!r} does not apply to scheme {scheme!r}: it has no "
            "orthogonal centre (its mask is uniformly random); pass center_density=None"
        )


def _mask(layout: Layout, density: float, generator: np.random.Generator) -> np.ndarray:
    mask = np.zeros(layout.shape, dtype=bool)
    count = mask_count(density, layout.block_size)
    for group in range(layout.groups):
        flat = np.zeros(layout.block_size, dtype=bool)
        flat[generator.choice(layout.block_size, size=count, replace=False)] = True
        mask[layout.block(group)] = flat.reshape((layout.out_per_group,) + layout.shape[1:])
    return mask


def random_mask(shape: Sequence[int], density: float, *, rng: Any = None, groups: int = 1) -> np.ndarray:
    """A boolean mask with exactly ``mask_count(density, block_size)`` True entries per group block.

    Examples
    --------
    >>> int(random_mask((30, 20), 0.1, rng=0).sum())
    60
    """
    return _mask(parse_layout(shape, groups), check_density(density), as_generator(rng))


def _gaussian(shape, density, gain, dtype, rng, groups, center_density, scheme, per_unit):
    layout = parse_layout(shape, groups)
    density = check_density(density)
    gain = check_gain(gain)
    dtype = resolve_dtype(dtype)
    check_gain_representable(gain, dtype)
    _check_no_centre(center_density, scheme)
    generator = as_generator(rng)
    mask = _mask(layout, density, generator)
    normal = generator.standard_normal(layout.shape)
    if per_unit:
        fan_in = mask.reshape(layout.shape[0], -1).sum(axis=1)
        fan_in = np.maximum(fan_in, 1).reshape((-1,) + (1,) * (len(layout.shape) - 1))
    else:
        fan_in = layout.in_per_group * layout.taps
    weight = np.where(mask, normal * (gain / np.sqrt(fan_in)), 0.0)
    return weight.astype(dtype, copy=False), mask


def kaiming(
    shape: Sequence[int],
    density: float,
    *,
    gain: float = 1.0,
    dtype: Any = np.float32,
    rng: Any = None,
    groups: int = 1,
    center_density: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random mask, ``N(0, g^2 / fan_in)`` values with the dense layer's fan-in.

    Examples
    --------
    >>> weight, mask = kaiming((400, 400), 0.1, gain=2.0, rng=0, dtype=np.float64)
    >>> round(float(weight[mask].std()), 1)  # 2 / sqrt(400)
    0.1
    """
    return _gaussian(shape, density, gain, dtype, rng, groups, center_density, "kaiming", per_unit=False)


def kaiming_fanin(
    shape: Sequence[int],
    density: float,
    *,
    gain: float = 1.0,
    dtype: Any = np.float32,
    rng: Any = None,
    groups: int = 1,
    center_density: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Random mask, ``N(0, g^2 / k_i)`` values with ``k_i`` the mask entries of output unit ``i``.

    Examples
    --------
    >>> weight, mask = kaiming_fanin((400, 400), 0.1, gain=2.0, rng=0, dtype=np.float64)
    >>> round(float(weight[mask].std()), 1)  # 2 / sqrt(40): the sparse fan-in
    0.3
    """
    return _gaussian(shape, density, gain, dtype, rng, groups, center_density, "kaiming_fanin", per_unit=True)
