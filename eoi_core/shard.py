r"""Shards: any rectangle of an EOI weight, built alone, bit-identical to the slice of the whole.

For the wide Givens matrix ``G`` (``n <= m``) of a block, every rotation mixes
two *columns*, so every *row* of ``G`` evolves on its own.  A shard therefore

1. runs the pattern pass (bitsets of the supports, ``n * m / 8`` bytes, cheap),
   which fixes the stopping point exactly as for the whole weight;
2. replays the rotations on the values of its own rows of ``G`` only, and
   writes the columns it owns;
3. sets the fill (zero-valued trainable entries) of its own segments: the
   block's fill ranks count zeros in row-major order, and the number of zeros
   before each of the shard's rows follows from the bitsets.

Which weight axis holds the rows of ``G`` is :func:`free_axis`: the rows of
the weight when ``out < in`` (the weight is ``G``), its columns when
``out >= in`` (the weight is ``G^T``).  Splitting the free axis among ``W``
shards splits the value pass ``W`` ways; splitting the other axis costs every
shard the whole value pass (in row bands, so its memory stays at the shard
plus the bitsets) but no redistribution.

Memory: the shard, the bitsets, the rotations applied (32 bytes each) and a
band of values.  One exception: a kernel's fill is drawn with NumPy's
``Generator.choice`` over the whole block (the random-stream protocol), which
takes ``8 * block_size`` bytes while it runs when the fill is large.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .allocation import aligned_zeros
from .api import _engine, _plan
from .randomness import RotationStream, as_generator, fill_ranks, split

__all__ = ["sparse_orthogonal_shard", "shard_bounds", "free_axis"]


def shard_bounds(size: int, parts: int) -> list[tuple[int, int]]:
    """The default split of ``range(size)`` into ``parts`` contiguous ``(start, stop)`` pieces.

    The first ``size % parts`` pieces get one more element, as
    ``numpy.array_split`` does; pieces may be empty when ``parts > size``.

    Examples
    --------
    >>> shard_bounds(10, 4)
    [(0, 3), (3, 6), (6, 8), (8, 10)]
    """
    from .checks import check_int

    size = check_int(size, "size", minimum=0)
    parts = check_int(parts, "parts")
    base, extra = divmod(size, parts)
    bounds, start = [], 0
    for part in range(parts):
        stop = start + base + (part < extra)
        bounds.append((start, stop))
        start = stop
    return bounds


def free_axis(shape: Sequence[int], groups: int = 1) -> int:
    """The weight axis whose shards split the work: 0 when ``out/groups < in``, else 1.

    Examples
    --------
    >>> free_axis((1024, 4096)), free_axis((4096, 1024)), free_axis((512, 512, 3, 3))
    (0, 1, 1)
    """
    from .layout import parse_layout

    layout = parse_layout(shape, groups)
    return 0 if layout.out_per_group < layout.in_per_group else 1


def _bounds(index: Any, shape: tuple[int, ...]) -> tuple[tuple[int, int], ...]:
    """``index`` (slices or ``(start, stop)`` pairs, at least two) as ``(start, stop)`` per axis."""
    if isinstance(index, (slice, str, bytes)) or not isinstance(index, Sequence):
        raise TypeError(
            f"index must be a tuple of slices or (start, stop) pairs over the shape's axes, got {index!r}"
        )
    items = tuple(index)
    if not 2 <= len(items) <= len(shape):
        raise ValueError(
            f"index must cover the first two axes of shape {shape} (and at most all {len(shape)}), "
            f"got {len(items)} entries: {index!r}"
        )
    bounds = []
    for axis, size in enumerate(shape):
        item = items[axis] if axis < len(items) else slice(None)
        if isinstance(item, slice):
            start, stop, step = item.indices(size)
            if step != 1:
                raise ValueError(f"index[{axis}]={item!r}: a shard is a rectangle, slices need step 1")
            bounds.append((start, max(start, stop)))
            continue
        pair = tuple(item) if isinstance(item, (tuple, list)) else None
        if (
            pair is None
            or len(pair) != 2
            or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) for v in pair)
        ):
            raise TypeError(f"index[{axis}] must be a slice or a (start, stop) pair of ints, got {item!r}")
        start, stop = int(pair[0]), int(pair[1])
        if not 0 <= start <= stop <= size:
            raise ValueError(
                f"index[{axis}]=({start}, {stop}) must satisfy 0 <= start <= stop <= shape[{axis}]={size}"
            )
        bounds.append((start, stop))
    return tuple(bounds)


def sparse_orthogonal_shard(
    shape: Sequence[int],
    density: float,
    index: Sequence[Any],
    *,
    gain: float = 1.0,
    dtype: Any = np.float32,
    rng: Any = None,
    groups: int = 1,
    center_density: float | str | None = None,
    engine: str = "numba",
) -> tuple[np.ndarray, np.ndarray]:
    """The rectangle ``index`` of :func:`~eoi_core.sparse_orthogonal`'s ``(weight, mask)``, built alone.

    Returns exactly ``(weight[index], mask[index])`` of
    ``sparse_orthogonal(shape, density, rng=rng, ...)`` with the same
    arguments, bit for bit, for every engine, while the ``"numba"`` engine
    needs memory for the shard and the support bitsets (``n * m / 8`` bytes per
    block) only, not for the whole weight (module docstring).  The
    ``"reference"`` engine builds the whole weight and slices it.

    Parameters
    ----------
    shape, density, gain, dtype, groups, center_density, engine
        As for :func:`~eoi_core.sparse_orthogonal`.
    index : tuple of slices or ``(start, stop)`` pairs
        One per axis of the canonical ``shape``, at least the first two
        (``out``, ``in``); kernel axes left out are taken whole.  Slices follow
        Python's rules (negative and out-of-range bounds are clipped) but
        must have step 1.  A shard with no entries gives empty arrays.
    rng : int, numpy.random.Generator or numpy.random.SeedSequence
        As for :func:`~eoi_core.sparse_orthogonal`, but required: every shard
        of one weight must see the same seed (an int, or a Generator in the
        same state on every rank; a Generator is advanced just as the whole
        call would advance it).  ``None`` is an error.

    Returns
    -------
    weight : ndarray of the shard's shape and ``dtype``
    mask : ndarray of bool, the shard's shape

    Raises
    ------
    TypeError, ValueError
        For any invalid argument (those of :func:`~eoi_core.sparse_orthogonal`
        first, then ``index`` and ``rng``); nothing is built before all checks pass.

    Examples
    --------
    >>> import numpy as np
    >>> import eoi_core
    >>> weight, mask = eoi_core.sparse_orthogonal((64, 256), 0.1, rng=3)
    >>> top, top_mask = eoi_core.sparse_orthogonal_shard((64, 256), 0.1, (slice(0, 32), slice(None)), rng=3)
    >>> bool(np.array_equal(top, weight[:32]) and np.array_equal(top_mask, mask[:32]))
    True
    >>> [piece for piece in eoi_core.shard_bounds(64, 2)]
    [(0, 32), (32, 64)]
    """
    plan = _plan(shape, density, gain, dtype, groups, center_density)
    layout, budget = plan.layout, plan.budget
    implementation = _engine(engine)
    bounds = _bounds(index, layout.shape)
    if rng is None:
        raise ValueError(
            "rng=None gives every shard fresh entropy, so the shards would belong to different weights; "
            "pass the same int seed (or Generator state) to every shard"
        )
    generator = as_generator(rng)
    out_shape = tuple(stop - start for start, stop in bounds)
    if engine != "numba":
        from .api import sparse_orthogonal

        weight, mask = sparse_orthogonal(
            layout.shape, plan.density, gain=plan.gain, dtype=plan.dtype, rng=generator,
            groups=layout.groups, center_density=center_density, engine=engine,
        )
        region = tuple(slice(start, stop) for start, stop in bounds)
        return np.ascontiguousarray(weight[region]), np.ascontiguousarray(mask[region])
    children = split(generator, layout.groups)  # advances a Generator as the whole call does
    weight = aligned_zeros(out_shape, plan.dtype)
    mask = aligned_zeros(out_shape, bool)
    if 0 in out_shape:
        return weight, mask
    (row0, row1), (col0, col1) = bounds[0], bounds[1]
    kernel_whole = all(bound == (0, size) for bound, size in zip(bounds[2:], layout.kernel))
    taps = layout.taps
    per_group = layout.out_per_group
    inp = layout.in_per_group
    transposed = per_group >= inp
    n, m = (inp, per_group) if transposed else (per_group, inp)
    for group in range(row0 // per_group, (row1 - 1) // per_group + 1):
        lo = max(row0, group * per_group) - group * per_group  # rows of this block in the shard
        hi = min(row1, (group + 1) * per_group) - group * per_group
        out_rows = slice(group * per_group + lo - row0, group * per_group + hi - row0)
        rotation_rng, fill_rng = split(children[group], 2)
        stream = RotationStream(rotation_rng, m) if m > 1 else None
        if kernel_whole:
            block_weight, block_mask = weight[out_rows], mask[out_rows]
        else:  # the fill walks whole taps: build them for the shard's rows and columns, then slice
            block_weight = np.zeros((hi - lo, col1 - col0) + layout.kernel, dtype=plan.dtype)
            block_mask = np.zeros(block_weight.shape, dtype=bool)
        centre = (slice(None), slice(None)) + layout.centre
        warming = implementation.warm_while(block_weight[centre], block_mask[centre], transposed)
        pattern = implementation.pattern_pass(n, m, budget.centre, stream)
        implementation.write_values(
            pattern,
            block_weight[centre],
            block_mask[centre],
            transposed=transposed,
            rows=(col0, col1) if transposed else (lo, hi),
            cols=(lo, hi) if transposed else (col0, col1),
            gain=plan.gain,
            warming=warming,
        )
        ranks = fill_ranks(fill_rng, layout.block_size - pattern.nnz, budget.block - pattern.nnz)
        implementation.fill_shard(
            block_mask.reshape(hi - lo, (col1 - col0) * taps), pattern, transposed, (lo, hi), (col0, col1),
            inp, taps, ranks,
        )
        del pattern
        if not kernel_whole:
            taps_region = (slice(None), slice(None)) + tuple(slice(a, b) for a, b in bounds[2:])
            weight[out_rows] = block_weight[taps_region]
            mask[out_rows] = block_mask[taps_region]
    return weight, mask

