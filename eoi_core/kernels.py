"""Channels-last kernel layouts (Keras, Flax) and where their orthogonal blocks are.

A framework that stores weights channels-last hands an initializer only a
shape, and the same shape can mean different things: ``(64, 4, 16)`` is a
1-D conv kernel ``(width, in, out)`` or an attention query kernel ``(in,
heads, head_dim)``.  The *layout* says which, and so where the orthogonal
blocks are.  This module is the one translation, used by every channels-last
adapter; the core itself speaks only the canonical layout of
:func:`eoi_core.sparse_orthogonal` (``(out, in // groups, *kernel)``, with
``groups`` independent blocks along ``out``).

============== ========================================= ============================== =========
layout         channels-last shape                       canonical shape                blocks
============== ========================================= ============================== =========
dense          ``(in, out)``                             ``(out, in)``                  groups
conv           ``(*kernel, in // groups, out)``          ``(out, in // groups, *k)``    groups
conv_transpose ``(*kernel, out, in)``                    ``(in, out, *k)``              1
depthwise      ``(*kernel, channels, multiplier)``       ``(channels * mult, 1, *k)``   channels
gates          ``(in, gates * units)``                   ``(gates * units, in)``        gates
einsum         ``(*in_axes, *out_axes)``                 ``(prod(out), prod(in))``      groups
============== ========================================= ============================== =========

``conv_transpose`` is Keras' transposed convolution kernel; its canonical
shape is PyTorch's ``ConvTranspose`` weight ``(in, out, *kernel)``, whose
centre block ``H`` (``in x out``) makes the layer compute ``y = H^T x`` at
each position.

``gates`` is a dense kernel whose output is ``gates`` stacked blocks that
each see the whole input (LSTM: 4, GRU: 3, fused Q/K/V: 3): each block is its
own exact EOI.  ``einsum`` flattens the input axes (the first ``in_axes``
axes) and the output axes; with ``groups = heads`` an attention projection
``(in, heads, head_dim)`` gets one orthogonal block per head.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from .checks import check_int
from .layout import MAX_RANK, from_channels_last, parse_layout, to_channels_last

__all__ = ["KERNEL_LAYOUTS", "KernelLayout", "kernel_layout"]

KERNEL_LAYOUTS = ("dense", "conv", "conv_transpose", "depthwise", "gates", "einsum")


@dataclass(frozen=True)
class KernelLayout:
    """How a channels-last kernel maps to the canonical layout of the core.

    Attributes
    ----------
    kind : str
        One of :data:`KERNEL_LAYOUTS`.
    shape : tuple of int
        The kernel's channels-last shape.
    canonical : tuple of int
        The shape handed to :func:`eoi_core.sparse_orthogonal`.
    groups : int
        Independent orthogonal blocks along the canonical ``out`` axis.
    """

    kind: str
    shape: tuple[int, ...]
    canonical: tuple[int, ...]
    groups: int

    def to_canonical(self, array: np.ndarray) -> np.ndarray:
        """The canonical view of a channels-last ``array`` of :attr:`shape`."""
        array = np.asarray(array)
        if array.shape != self.shape:
            raise ValueError(f"array has shape {array.shape}, the layout expects {self.shape}")
        if self.kind in ("dense", "gates", "einsum"):
            rows = math.prod(self.canonical[1:])
            return array.reshape(rows, -1).T
        if self.kind == "depthwise":
            kernel = self.shape[:-2]
            return from_channels_last(array.reshape(*kernel, 1, -1))
        return from_channels_last(array)

    def from_canonical(self, array: np.ndarray) -> np.ndarray:
        """The channels-last array of :attr:`shape` for a canonical ``array``."""
        array = np.asarray(array)
        if array.shape != self.canonical:
            raise ValueError(f"array has shape {array.shape}, the canonical shape is {self.canonical}")
        if self.kind in ("dense", "gates", "einsum"):
            return np.ascontiguousarray(array.T).reshape(self.shape)
        if self.kind == "depthwise":
            return np.ascontiguousarray(to_channels_last(array)).reshape(self.shape)
        return np.ascontiguousarray(to_channels_last(array))


def _dims(shape: Any) -> tuple[int, ...]:
    if isinstance(shape, (str, bytes)) or not isinstance(shape, (Sequence, np.ndarray)):
        raise TypeError(f"shape must be a sequence of positive integers, got {shape!r}")
    return tuple(check_int(d, f"shape[{axis}]") for axis, d in enumerate(shape))


def kernel_layout(
    shape: Sequence[int],
    layout: str,
    *,
    groups: int = 1,
    gates: int | None = None,
    in_axes: int = 1,
) -> KernelLayout:
    """Describe a channels-last kernel of ``shape`` read as ``layout``.

    Parameters
    ----------
    shape : sequence of int
        The channels-last shape (see the module table).
    layout : {"dense", "conv", "conv_transpose", "depthwise", "gates", "einsum"}
        How to read it.
    groups : int, optional
        Blocks along the output: conv groups (``feature_group_count``), or
        heads for ``einsum`` (must divide the flattened output).
    gates : int, optional
        Number of stacked gate blocks for ``"gates"`` (must divide ``out``).
    in_axes : int, optional
        For ``"einsum"``: how many leading axes are input axes.

    Raises
    ------
    TypeError, ValueError
        For an unknown layout, a shape of the wrong rank for it, or blocks that
        do not divide the output.

    Examples
    --------
    >>> kernel_layout((64, 4, 16), "einsum", groups=4).canonical  # MHA query: 4 heads
    (64, 64)
    >>> kernel_layout((3, 3, 16, 2), "depthwise").canonical, kernel_layout((3, 3, 16, 2), "depthwise").groups
    ((32, 1, 3, 3), 16)
    >>> kernel_layout((3, 3, 8, 4), "conv_transpose").canonical  # Conv2DTranspose(8) on 4 channels
    (4, 8, 3, 3)
    >>> kernel_layout((32, 4 * 8), "gates", gates=4).groups  # LSTM kernel, 8 units
    4
    """
    if not isinstance(layout, str) or layout not in KERNEL_LAYOUTS:
        raise ValueError(f"layout must be one of {KERNEL_LAYOUTS}, got {layout!r}")
    dims = _dims(shape)
    groups = check_int(groups, "groups")
    rank = len(dims)
    if layout in ("dense", "gates") and rank != 2:
        raise ValueError(f"layout={layout!r} needs a rank-2 kernel (in, out), got shape {dims}")
    if layout in ("conv", "conv_transpose", "depthwise") and not 3 <= rank <= MAX_RANK:
        raise ValueError(
            f"layout={layout!r} needs a kernel (*kernel, in, out) of rank 3 to {MAX_RANK}, got shape {dims}"
        )
    if layout == "dense":
        canonical = (dims[1], dims[0])
    elif layout == "gates":
        if gates is None:
            raise ValueError("layout='gates' needs gates= (the number of stacked blocks: LSTM 4, GRU 3)")
        gates = check_int(gates, "gates")
        if dims[1] % gates:
            raise ValueError(f"gates={gates} must divide the kernel's output size {dims[1]} (shape {dims})")
        canonical, groups = (dims[1], dims[0]), gates
    elif layout in ("conv", "conv_transpose"):
        # (*k, in, out) -> (out, in, *k); for conv_transpose the same move
        # turns (*k, out, in) into the ConvTranspose weight (in, out, *k).
        canonical = (dims[-1], dims[-2]) + dims[:-2]
    elif layout == "depthwise":
        channels, multiplier = dims[-2], dims[-1]
        canonical, groups = (channels * multiplier, 1) + dims[:-2], channels
    else:
        in_axes = check_int(in_axes, "in_axes")
        if not 1 <= in_axes < rank:
            raise ValueError(f"in_axes must be in [1, {rank - 1}] for shape {dims}, got {in_axes}")
        canonical = (math.prod(dims[in_axes:]), math.prod(dims[:in_axes]))
    parse_layout(canonical, groups)  # groups must divide the canonical out axis
    return KernelLayout(layout, dims, canonical, groups)
