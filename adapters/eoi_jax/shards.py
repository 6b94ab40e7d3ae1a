r"""One device's shard of a Flax kernel, built on the host alone.

A JAX sharding hands each device a rectangle of the kernel in Flax's
channels-last layout; the core builds rectangles of the *canonical* weight
(:func:`eoi_core.sparse_orthogonal_shard`, bit-identical to slicing the whole).
This module maps one to the other, per layout (:mod:`eoi_core.kernels`):

============== ================================== =========================================
layout         Flax axes -> canonical axes        the canonical rectangle built
============== ================================== =========================================
dense, gates   ``(in, out)`` -> ``(out, in)``     exactly the shard (transposed)
conv,          ``(*k, in, out)`` -> ``(out, in,   exactly the shard (axes moved); kernel
conv_transpose ``*k)``                            axes may be sharded too
einsum         ``(*in_axes, *out_axes)`` ->       the shard when only the *leading* axis of
               ``(prod(out), prod(in))``          each side is split (e.g. heads of a
                                                  ``(in, heads, head_dim)`` query); else the
                                                  smallest canonical rectangle covering it
depthwise      ``(*k, channels, mult)`` ->        the shard when ``mult`` is whole (split
               ``(channels * mult, 1, *k)``       channels); else the covering rows
============== ================================== =========================================

A flattened side (``in_axes`` or ``out_axes`` of an einsum kernel, ``(channels,
mult)`` of a depthwise kernel) is row-major, so the Flax shard's entries on
that side are the flat indices ``ravel_multi_index`` of its ranges; the
covering rectangle spans the first to the last of them.  Splitting a
trailing axis (``head_dim`` with ``heads`` whole, say) makes that rectangle
nearly the whole side: correct, but no saving.

Schemes other than EOI have no shard function: :func:`host_shard` cuts their
shard from the whole weight, and :func:`eoi_jax.initializers.stage` builds
that whole weight once for all devices rather than once per shard.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

import eoi_core
from eoi_core.layout import to_channels_last

__all__ = ["host_shard", "canonical_cover", "TRUE_SHARD_LAYOUTS"]

TRUE_SHARD_LAYOUTS = ("dense", "gates", "conv", "conv_transpose")
"""Layouts whose every Flax shard is exactly one canonical rectangle."""


def _ranges(index: Sequence[Any], shape: Sequence[int]) -> tuple[tuple[int, int], ...]:
    """``index`` (slices, as ``jax.make_array_from_callback`` gives) as ``(start, stop)`` per axis."""
    index = tuple(index) + (slice(None),) * (len(shape) - len(tuple(index)))
    bounds = []
    for item, size in zip(index, shape):
        start, stop, step = item.indices(size)
        if step != 1:
            raise ValueError(f"a shard is a rectangle: index {index!r} has a step of {step}")
        bounds.append((start, max(start, stop)))
    return tuple(bounds)


def _flat(bounds: Sequence[tuple[int, int]], dims: Sequence[int]) -> np.ndarray:
    """Row-major flat indices of the rectangle ``bounds`` inside ``dims`` (in row-major order)."""
    if not dims:
        return np.zeros(1, dtype=np.int64)
    grids = np.meshgrid(*[np.arange(a, b, dtype=np.int64) for a, b in bounds], indexing="ij")
    return np.ravel_multi_index(tuple(grids), tuple(dims)).reshape(-1)


def _split_axes(layout: Any) -> int:
    """How many leading Flax axes flatten into the canonical ``in`` axis (dense, gates, einsum)."""
    shape = layout.shape
    for count in range(1, len(shape)):
        if math.prod(shape[:count]) == layout.canonical[1] and math.prod(shape[count:]) == layout.canonical[0]:
            return count  # with size-1 axes several counts fit; all flatten alike
    raise AssertionError(f"no split of {shape} flattens to {layout.canonical}")  # kernel_layout guarantees one


def canonical_cover(layout: Any, index: Sequence[Any]) -> tuple[tuple[slice, ...], Any]:
    """The canonical rectangle that holds the Flax shard ``index``, and how to cut the shard from it.

    Parameters
    ----------
    layout : eoi_core.kernels.KernelLayout
        The kernel's layout.
    index : tuple of slices
        The shard in the Flax shape ``layout.shape`` (step 1).

    Returns
    -------
    region : tuple of slices
        An index of the canonical shape ``layout.canonical``.
    cut : callable
        ``cut(block)`` turns the canonical ``block`` of ``region`` into the
        Flax shard (shape: the lengths of ``index``).

    Examples
    --------
    >>> from eoi_core.kernels import kernel_layout
    >>> query = kernel_layout((64, 4, 16), "einsum", groups=4)      # (in, heads, head_dim)
    >>> canonical_cover(query, (slice(None), slice(2, 4), slice(None)))[0]   # heads 2, 3
    (slice(32, 64, None), slice(0, 64, None))
    >>> dense = kernel_layout((16, 32), "dense")
    >>> canonical_cover(dense, (slice(0, 16), slice(8, 16)))[0]
    (slice(8, 16, None), slice(0, 16, None))
    """
    shape = layout.shape
    bounds = _ranges(index, shape)
    sizes = tuple(b - a for a, b in bounds)
    kind = layout.kind
    if kind in ("conv", "conv_transpose"):
        # (*k, in, out) <-> (out, in, *k): the same rectangle with its axes moved
        region = (slice(*bounds[-1]), slice(*bounds[-2])) + tuple(slice(a, b) for a, b in bounds[:-2])
        return region, to_channels_last
    if kind in ("dense", "gates", "einsum"):
        split = _split_axes(layout)
        rows = _flat(bounds[split:], shape[split:])  # canonical out
        cols = _flat(bounds[:split], shape[:split])  # canonical in
        if 0 in sizes:
            return (slice(0, 0), slice(0, 0)), lambda block: np.zeros(sizes, dtype=block.dtype)
        row0, row1, col0, col1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1

        def cut(block: np.ndarray) -> np.ndarray:
            inner = block
            if row1 - row0 != rows.size:
                inner = inner[rows - row0]
            if col1 - col0 != cols.size:
                inner = inner[:, cols - col0]
            return np.ascontiguousarray(inner.T).reshape(sizes)

        return (slice(row0, row1), slice(col0, col1)), cut
    if kind == "depthwise":
        channels, multiplier = shape[-2], shape[-1]
        taps = tuple(slice(a, b) for a, b in bounds[:-2])
        rows = _flat(bounds[-2:], (channels, multiplier))
        if 0 in sizes:
            return (slice(0, 0), slice(0, 1)) + taps, lambda block: np.zeros(sizes, dtype=block.dtype)
        row0, row1 = int(rows[0]), int(rows[-1]) + 1

        def cut(block: np.ndarray) -> np.ndarray:
            inner = to_channels_last(block)[..., 0, :]  # (*k, rows)
            if row1 - row0 != rows.size:
                inner = inner[..., rows - row0]
            return np.ascontiguousarray(inner).reshape(sizes)

        return (slice(row0, row1), slice(0, 1)) + taps, cut
    raise ValueError(f"no shard mapping for layout {kind!r}")


def host_shard(seed: int, request: Any, index: Sequence[Any], *, mask: bool = True) -> tuple[np.ndarray, Any]:
    """The Flax shard ``index`` of the request's ``(weight, mask)`` for ``seed`` (host side).

    Equal, bit for bit, to ``host_eoi(seed, request)`` sliced with ``index``;
    for EOI it builds only the canonical rectangle :func:`canonical_cover`
    names (memory: that rectangle and the core's bitsets).  ``mask=False``
    returns ``None`` for the mask (it is built anyway, then dropped).
    """
    from .initializers import _is_eoi, host_eoi

    layout = request.layout
    if not _is_eoi(request.scheme):
        weight, full_mask = host_eoi(seed, request)
        region = tuple(slice(a, b) for a, b in _ranges(index, layout.shape))
        return np.ascontiguousarray(weight[region]), (np.ascontiguousarray(full_mask[region]) if mask else None)
    region, cut = canonical_cover(layout, index)
    weight, block_mask = eoi_core.sparse_orthogonal_shard(
        layout.canonical,
        request.density,
        region,
        gain=request.gain,
        dtype=request.dtype,
        rng=seed,
        groups=layout.groups,
        center_density=request.center_density,
    )
    return cut(weight), (cut(block_mask) if mask else None)
