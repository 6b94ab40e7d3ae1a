"""Weight layouts, group blocks, the mask budget and the orthogonal floor.

The core speaks PyTorch's canonical layout: ``(out, in)`` for dense layers and
``(out, in // groups, *kernel)`` for convolutions.  Keras and Flax keep their
weights channels-last, ``(in, out)`` and ``(*kernel, in // groups, out)``; the
two converters at the bottom are the only place that layout is translated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .checks import check_int

__all__ = [
    "Layout",
    "parse_layout",
    "mask_count",
    "min_density",
    "canonical_shape",
    "to_channels_last",
    "from_channels_last",
]

MAX_RANK = 5


def mask_count(density: float, size: int) -> int:
    """Number of trainable entries for ``density`` over ``size`` entries.

    The rounding rule of the whole library: ``floor(density * size + 0.5)``
    (round half up), applied once per group block.
    """
    return int(math.floor(density * size + 0.5))


@dataclass(frozen=True)
class Layout:
    """A canonical weight shape split into group blocks and kernel taps.

    Attributes
    ----------
    shape : tuple of int
        ``(out, in // groups, *kernel)``.
    groups : int
        Number of independent blocks along ``out``.
    """

    shape: tuple[int, ...]
    groups: int

    @property
    def out_per_group(self) -> int:
        return self.shape[0] // self.groups

    @property
    def in_per_group(self) -> int:
        return self.shape[1]

    @property
    def kernel(self) -> tuple[int, ...]:
        return self.shape[2:]

    @property
    def taps(self) -> int:
        """Number of spatial taps ``K`` (1 for a dense layer)."""
        return math.prod(self.kernel)

    @property
    def centre(self) -> tuple[int, ...]:
        """Index of the spatial centre, ``(k - 1) // 2`` on each axis."""
        return tuple((k - 1) // 2 for k in self.kernel)

    @property
    def block_size(self) -> int:
        """Entries of one group block, ``out/groups * in/groups * K``."""
        return self.out_per_group * self.in_per_group * self.taps

    @property
    def floor(self) -> int:
        """Non-zeros an orthogonal centre block needs at least: ``min(out/g, in/g)``."""
        return min(self.out_per_group, self.in_per_group)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def block(self, group: int) -> slice:
        """Slice of the ``out`` axis that holds ``group``'s block."""
        return slice(group * self.out_per_group, (group + 1) * self.out_per_group)

    def centre_index(self) -> tuple:
        """Index that takes the ``(out/g, in/g)`` centre slice of a block."""
        return (slice(None), slice(None)) + self.centre


def parse_layout(shape: Any, groups: Any = 1) -> Layout:
    """Validate a canonical shape and ``groups``; return its :class:`Layout`."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) and not isinstance(
        shape, np.ndarray
    ):
        raise TypeError(
            f"shape must be a sequence of 2 to {MAX_RANK} positive integers, got {shape!r}"
        )
    dims = tuple(shape)
    if not 2 <= len(dims) <= MAX_RANK:
        raise ValueError(
            f"shape must have rank 2 (out, in) to {MAX_RANK} (out, in // groups, *kernel), "
            f"got rank {len(dims)}: {shape!r}"
        )
    dims = tuple(check_int(d, f"shape[{axis}]") for axis, d in enumerate(dims))
    groups = check_int(groups, "groups")
    if dims[0] % groups:
        raise ValueError(
            f"groups={groups} must divide the output channels shape[0]={dims[0]} "
            f"(and the input channels shape[1] * groups)"
        )
    return Layout(dims, groups)


def min_density(shape: Sequence[int], groups: int = 1) -> float:
    """The orthogonal floor of ``shape`` as a density.

    An orthogonal ``n x m`` block needs ``min(n, m)`` non-zeros, so the floor
    is ``min(out/g, in/g) / (out/g * in/g * K)``: at this density each block's
    mask holds exactly its floor.  Because mask counts round half up
    (:func:`mask_count`), densities down to ``(floor - 0.5) / block_size``
    round to the floor and are accepted as well
    (:func:`accepted_min_density`); anything lower is an error.

    Examples
    --------
    >>> min_density((64, 32))
    0.015625
    """
    layout = parse_layout(shape, groups)
    return layout.floor / layout.block_size


def accepted_min_density(layout: "Layout") -> float:
    """Smallest density that :func:`mask_count` rounds up to the floor: ``(floor - 0.5) / block_size``."""
    return (layout.floor - 0.5) / layout.block_size


def canonical_shape(channels_last_shape: Sequence[int]) -> tuple[int, ...]:
    """Canonical shape of a channels-last one.

    ``(in, out) -> (out, in)``; ``(*kernel, in, out) -> (out, in, *kernel)``.
    """
    dims = tuple(channels_last_shape)
    if len(dims) < 2:
        raise ValueError(f"a weight shape needs rank >= 2, got {dims!r}")
    return (dims[-1], dims[-2]) + dims[:-2]


def to_channels_last(array: np.ndarray) -> np.ndarray:
    """Move a canonical ``(out, in, *kernel)`` array to ``(*kernel, in, out)``."""
    rank = array.ndim
    return np.transpose(array, tuple(range(2, rank)) + (1, 0))


def from_channels_last(array: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_channels_last`."""
    rank = array.ndim
    return np.transpose(array, (rank - 1, rank - 2) + tuple(range(rank - 2)))
