r"""EOI on ``torch.distributed`` tensors: each rank builds only its own shard.

A :class:`~torch.distributed.tensor.DTensor` (what ``fully_shard`` (FSDP2)
and tensor parallelism make of parameters) is a global weight of which every
rank holds one rectangle: ``Shard(d)`` on a mesh dimension cuts axis ``d``
into contiguous pieces, ``Replicate()`` keeps it whole.  EOI gives every rank
the same seed (drawn from torch's RNG, so every rank must run the same
program with the same ``torch.manual_seed``) and each rank builds only its
rectangle with :func:`eoi_core.sparse_orthogonal_shard`, bit-identical to the
slice of the single-process weight, in memory ``O(shard + pattern)``:

* the local rectangle is ``compute_local_shape_and_global_offset(shape,
  mesh, placements)`` (torch's own chunking rule, uneven shards included);
* a weight stored transposed (``transformers``' ``Conv1D``, ``(in, out)``)
  asks the core for the transposed rectangle of the canonical
  ``(out, in // groups, *kernel)`` weight; every other layout (Linear, Conv,
  ConvTranspose, fused Q/K/V and RNN gates as ``groups`` along ``out``) is
  canonical already, so its torch rectangle is the canonical one;
* the mask is a ``DTensor`` with the weight's mesh and placements
  (``DTensor.from_local``, no communication), so ``weight * mask`` is a local
  multiply.

Placements other than ``Shard`` and ``Replicate`` (``Partial``, FSDP2+TP's
strided shards) do not describe one rectangle of the weight: they are a
``ValueError``, never a guess.

Report numbers of a sharded weight are global: the mask count is the sum of
the local counts over the mesh dimensions that shard the weight (replicas are
counted once), and the orthogonality probe of :mod:`eoi_core.verify` is
computed with two all-reduces of probe-sized vectors (``(out + in) x P``
numbers per weight): ``z = H x`` is a sum of the ranks' ``H_r x_r`` products
and ``H^T z`` likewise, so no rank ever holds the whole weight.  Every rank of
the weight's mesh must therefore call :func:`eoi_torch.sparsify` together
(as every rank calls ``fully_shard``).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch

import eoi_core
from eoi_core.verify import PROBES

__all__ = ["is_dtensor", "local_bounds", "build_local", "as_dtensor", "global_sum", "probe_error"]


def is_dtensor(tensor: Any) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (a sharded or replicated parameter)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def local_bounds(tensor: Any, name: str = "tensor") -> tuple[tuple[int, int], ...]:
    """This rank's rectangle of the DTensor ``tensor``: ``(start, stop)`` per axis of the global shape.

    Raises ``ValueError`` for placements that are not one rectangle of the weight
    (``Partial``, strided shards) and when torch's local tensor disagrees with the
    rectangle (a layout this module does not know).
    """
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    for placement in tensor.placements:
        if type(placement) not in (Shard, Replicate):
            raise ValueError(
                f"{name} is a DTensor with placements {tuple(tensor.placements)}; EOI builds local shards "
                "for Shard(dim) and Replicate() placements only (a Partial or strided shard is not one "
                "rectangle of the weight)"
            )
    shape, offset = compute_local_shape_and_global_offset(tuple(tensor.shape), tensor.device_mesh,
                                                          tensor.placements)
    local = tensor.to_local()
    if tuple(local.shape) != tuple(shape):
        raise ValueError(
            f"{name}: the local tensor has shape {tuple(local.shape)} but placements "
            f"{tuple(tensor.placements)} of the global shape {tuple(tensor.shape)} give {tuple(shape)}"
        )
    return tuple((start, start + size) for start, size in zip(offset, shape))


def _canonical(bounds: tuple[tuple[int, int], ...], transposed: bool) -> tuple[tuple[int, int], ...]:
    return (bounds[1], bounds[0]) + bounds[2:] if transposed else bounds


def build_local(
    shape: tuple[int, ...],
    bounds: tuple[tuple[int, int], ...],
    density: float,
    *,
    seed: int,
    dtype: Any,
    transposed: bool = False,
    gain: float = 1.0,
    groups: int = 1,
    center_density: float | str | None = None,
    build: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray, tuple[tuple[int, int], ...]]:
    """This rank's canonical ``(weight, mask)`` block of a weight and its canonical bounds.

    ``shape`` is the weight's global torch shape and ``bounds`` this rank's
    rectangle of it (:func:`local_bounds`, checked before any seed is drawn);
    ``dtype`` is the core's dtype name.  With ``build=None`` the block comes from
    :func:`eoi_core.sparse_orthogonal_shard` (only the rectangle is built);
    another scheme has no shard function, so its whole weight is built (in
    float64) and sliced.  The block is in the canonical layout: transpose it
    back when ``transposed``.
    """
    shape = tuple(shape)
    canonical_shape = (shape[1], shape[0]) + shape[2:] if transposed else shape
    bounds = _canonical(tuple(bounds), transposed)
    if build is None:
        values, mask = eoi_core.sparse_orthogonal_shard(
            canonical_shape, density, bounds, gain=gain, dtype=dtype, rng=seed, groups=groups,
            center_density=center_density,
        )
        return values, mask, bounds
    values, mask = build(canonical_shape, density, gain=gain, dtype=dtype, rng=seed, groups=groups,
                         center_density=center_density)
    values, mask = np.asarray(values), np.asarray(mask, dtype=bool)
    if values.shape != canonical_shape or mask.shape != canonical_shape:
        raise ValueError(f"the scheme returned shapes {values.shape} and {mask.shape}, expected {canonical_shape}")
    region = tuple(slice(start, stop) for start, stop in bounds)
    return np.ascontiguousarray(values[region], dtype=np.float64), np.ascontiguousarray(mask[region]), bounds


def as_dtensor(local: torch.Tensor, like: Any) -> Any:
    """``local`` (this rank's block) as a DTensor with ``like``'s mesh, placements and global shape."""
    from torch.distributed.tensor import DTensor

    shape = torch.Size(like.shape)
    stride = torch.empty(shape, device="meta").stride()
    return DTensor.from_local(local.to(like.to_local().device), like.device_mesh, like.placements,
                              run_check=False, shape=shape, stride=stride)


def _sum_over_shards(values: torch.Tensor, like: Any) -> torch.Tensor:
    """Sum ``values`` over the ranks that hold different pieces of ``like`` (each piece once)."""
    import torch.distributed as dist
    from torch.distributed.tensor import Shard

    mesh = like.device_mesh
    for dim, placement in enumerate(like.placements):
        if isinstance(placement, Shard):  # ranks along a Replicate dimension hold the same piece
            dist.all_reduce(values, op=dist.ReduceOp.SUM, group=mesh.get_group(dim))
    return values


def global_sum(value: int, like: Any) -> int:
    """The sum of this rank's ``value`` over the distinct pieces of the DTensor ``like`` (a collective)."""
    device = like.to_local().device
    total = torch.tensor([value], dtype=torch.int64, device=device)
    return int(_sum_over_shards(total, like).item())


def probe_error(values: np.ndarray, bounds: tuple[tuple[int, int], ...], shape: tuple[int, ...],
                gain: float, groups: int, like: Any, *, probes: int = PROBES, seed: int = 0) -> float:
    r""":func:`eoi_core.verify.probe_error` of a weight of which this rank holds one block (a collective).

    ``values`` is this rank's canonical block at canonical ``bounds`` of the
    canonical ``shape``.  With ``H_b`` the ``b``-th group's centre block
    (``p = out / groups`` rows, ``q`` columns) and the same probes ``x`` as the
    single-process probe, tall blocks (``p >= q``) need ``z = H_b x`` (the
    ranks' row pieces of ``H_b x`` summed) and then ``y = H_b^\top z`` (their
    column pieces summed); wide blocks the same with ``H_b^\top`` first.  Each
    sum is one all-reduce of ``out x P`` or ``groups x q x P`` numbers, so the
    result equals the single-process probe up to the order of the sums.
    """
    compute = np.float64 if values.dtype == np.float64 else np.float32
    per_group, inputs = shape[0] // groups, shape[1]
    tall = per_group >= inputs
    (row0, row1), (col0, col1) = bounds[0], bounds[1]
    centre = tuple((k - 1) // 2 for k in shape[2:])
    holds_centre = all(start <= c < stop for c, (start, stop) in zip(centre, bounds[2:]))
    if holds_centre:
        local = tuple(c - start for c, (start, _) in zip(centre, bounds[2:]))
        matrix = np.asarray(values[(slice(None), slice(None)) + local], dtype=compute)
    else:  # this rank's piece of the kernel has no centre tap: it adds nothing to H x
        matrix = np.zeros((row1 - row0, col1 - col0), dtype=compute)
    x = np.random.default_rng(seed).standard_normal((groups, inputs if tall else per_group, probes)).astype(compute)
    blocks = range(row0 // per_group, (row1 - 1) // per_group + 1) if row1 > row0 else range(0)

    def rows(block: int) -> tuple[slice, slice]:
        """The local rows of ``block`` and their rows inside the block."""
        lo, hi = max(row0, block * per_group), min(row1, (block + 1) * per_group)
        return slice(lo - row0, hi - row0), slice(lo - block * per_group, hi - block * per_group)

    device = like.to_local().device

    def reduce(array: np.ndarray) -> np.ndarray:
        return _sum_over_shards(torch.from_numpy(array).to(device), like).cpu().numpy()

    first = np.zeros((groups, per_group, probes) if tall else (groups, inputs, probes), dtype=compute)
    for block in blocks:
        local_rows, block_rows = rows(block)
        if tall:  # z_b = H_b x_b: this rank's rows of it, from its columns of x
            first[block, block_rows] += matrix[local_rows] @ x[block, col0:col1]
        else:  # z_b = H_b^T x_b: this rank's columns of it, from its rows of x
            first[block, col0:col1] += matrix[local_rows].T @ x[block, block_rows]
    first = reduce(first)
    second = np.zeros(x.shape, dtype=compute)
    for block in blocks:
        local_rows, block_rows = rows(block)
        if tall:
            second[block, col0:col1] += matrix[local_rows].T @ first[block, block_rows]
        else:
            second[block, block_rows] += matrix[local_rows] @ first[block, col0:col1]
    second = reduce(second)
    return float((np.abs(second / (gain * gain) - x).max(axis=1) / np.abs(x).max(axis=1)).max())


def conform(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``mask`` laid out like ``like``: this rank's block of a whole mask for a DTensor ``like``,
    the whole mask (gathered: a collective) of a DTensor mask for a plain ``like``, else unchanged."""
    if is_dtensor(like):
        if not is_dtensor(mask):  # a mask registered before fully_shard: every rank holds all of it
            return as_dtensor(mask[tuple(slice(start, stop) for start, stop in local_bounds(like))], like)
        if mask.device_mesh != like.device_mesh or tuple(mask.placements) != tuple(like.placements):
            return mask.redistribute(like.device_mesh, like.placements)
        return mask
    if is_dtensor(mask):
        return mask.full_tensor()
    return mask


def fsdp_params(model: torch.nn.Module) -> dict[int, Any]:
    """FSDP2's record (``FSDPParam``) of every parameter ``fully_shard`` manages in ``model``, by ``id``.

    ``parametrize`` moves a weight to ``<layer>.parametrizations.<name>.original``;
    FSDP2 swaps the sharded and unsharded parameters by the module and name it
    recorded, so that record has to follow the move (:func:`move_fsdp_param`).
    Empty when ``model`` is not sharded with ``fully_shard``.
    """
    if not torch.distributed.is_available():
        return {}
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        return {}
    found = {}
    for module in model.modules():
        if isinstance(module, FSDPModule):
            state = module._get_fsdp_state()
            for group in getattr(state, "_fsdp_param_groups", None) or []:
                for record in group.fsdp_params:
                    found[id(record.sharded_param)] = record
    return found


def move_fsdp_param(record: Any, old: tuple[torch.nn.Module, str], new: tuple[torch.nn.Module, str]) -> None:
    """Point FSDP2's ``record`` of a parameter held as ``old`` (module, name) at ``new`` instead."""
    info = record._module_info
    pairs = [(info.module, info.param_name)] + list(zip(info.shared_modules, info.shared_param_names))
    pairs = [new if (module is old[0] and name == old[1]) else (module, name) for module, name in pairs]
    info.module, info.param_name = pairs[0]
    info.shared_modules[:] = [module for module, _ in pairs[1:]]
    info.shared_param_names[:] = [name for _, name in pairs[1:]]
