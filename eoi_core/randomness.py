"""The random streams every engine consumes, defined once.

Both engines read the same numbers in the same order, which is what makes
them agree bit for bit on the mask:

* ``rng`` (SPEC 7: ``None | int | numpy.random.Generator``) is split with
  ``Generator.spawn`` into one child per group, and each child into a
  *rotation* stream and a *fill* stream, so the two phases never share draws.
* The rotation stream is drawn in blocks of ``FIRST_BLOCK`` rotations,
  doubling up to ``ROTATION_BLOCK`` (small layers draw little, large ones
  make few calls); in each block, the first
  index ``i ~ U{0..m-1}``, the second ``j ~ U{0..m-2}`` shifted past ``i`` (so
  ``i != j`` uniformly), and ``theta ~ U[0, 2 pi)``; cosines and sines are
  taken here once so no engine depends on its own ``sin``/``cos``.
* The fill draws ``count`` distinct ranks among the zero positions of a block
  (row-major order) with ``Generator.choice``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterator

import numpy as np

__all__ = ["as_generator", "split", "RotationStream", "fill_ranks", "FIRST_BLOCK", "ROTATION_BLOCK"]

FIRST_BLOCK = 256
ROTATION_BLOCK = 4096


def as_generator(rng: Any) -> np.random.Generator:
    """SPEC 7: turn ``None``, a non-negative ``int`` or a ``Generator`` into a Generator."""
    if rng is None or isinstance(rng, np.random.Generator):
        return np.random.default_rng(rng)
    if isinstance(rng, numbers.Integral) and not isinstance(rng, (bool, np.bool_)):
        if rng < 0:
            raise ValueError(f"rng must be a non-negative integer seed, got {rng}")
        return np.random.default_rng(int(rng))
    if isinstance(rng, (np.random.SeedSequence, np.random.BitGenerator)):
        return np.random.default_rng(rng)
    raise TypeError(
        "rng must be None, a non-negative int or a numpy.random.Generator "
        f"(SPEC 7), got {rng!r} of type {type(rng).__name__}"
    )


def split(generator: np.random.Generator, count: int) -> list[np.random.Generator]:
    """``count`` independent children of ``generator`` (does not advance its stream)."""
    return generator.spawn(count)


class RotationStream:
    """Random Givens rotations on the columns of a matrix with ``cols`` columns.

    Iterating yields blocks ``(i, j, cos, sin)`` of ``FIRST_BLOCK``, twice that,
    ... up to ``ROTATION_BLOCK`` rotations.
    ``angle`` fixes every rotation angle (radians) instead of drawing it; it
    exists for the angle ablation of the paper's Appendix G.
    """

    def __init__(self, generator: np.random.Generator, cols: int, angle: float | None = None):
        if cols < 2:
            raise ValueError(f"a Givens rotation needs at least 2 columns, got {cols}")
        self.generator = generator
        self.cols = cols
        self.angle = angle
        self.block = FIRST_BLOCK

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
        while True:
            yield self.next_block()

    def drawn_after(self, count: int) -> int:
        """How many rotations the next blocks hold once they hold at least ``count`` (0 for ``count <= 0``).

        Examples
        --------
        >>> stream = RotationStream(np.random.default_rng(0), 8)
        >>> stream.drawn_after(1), stream.drawn_after(257), stream.drawn_after(5000)
        (256, 768, 7936)
        """
        drawn, size = 0, self.block
        while drawn < count:
            drawn += size
            size = min(2 * size, ROTATION_BLOCK)
        return drawn

    def next_block(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        draw = self.generator
        size = self.block
        self.block = min(2 * size, ROTATION_BLOCK)
        first = draw.integers(0, self.cols, size=size)
        second = draw.integers(0, self.cols - 1, size=size)
        second += second >= first
        if self.angle is None:
            theta = draw.uniform(0.0, 2.0 * math.pi, size=size)
        else:
            theta = np.full(size, float(self.angle))
        return first, second, np.cos(theta), np.sin(theta)


def fill_ranks(generator: np.random.Generator, zeros: int, count: int) -> np.ndarray:
    """Sorted ranks of ``count`` distinct zero positions out of ``zeros``."""
    if count <= 0:
        return np.empty(0, dtype=np.int64)
    ranks = generator.choice(zeros, size=count, replace=False, shuffle=False)
    ranks.sort()
    return ranks.astype(np.int64, copy=False)
