r"""EOI on ``torch.distributed`` tensors: each rank builds only its own shard.

A :class:`~torch.distributed.tensor.DTensor` (what ``fully_shard`` (FSDP2)
and tensor parallelism make of parameters) is a global weight of which every
rank holds a part: ``Shard(d)`` on a mesh dimension cuts axis ``d`` into
contiguous pieces, ``Replicate()`` keeps it whole, and the strided shard
FSDP2 adds on top of tensor parallelism (``_StridedShard(d, split_factor)``,
FSDP2's ``dp`` cut of each TP piece) may leave a rank several runs of rows or
columns.  EOI gives every rank the same seed (drawn from torch's RNG, so every
rank must run the same program with the same ``torch.manual_seed``) and each
rank builds only its part with :func:`eoi_core.sparse_orthogonal_shard`,
bit-identical to the slice of the single-process weight, in memory
``O(shard + pattern)``:

* a rank's part is, per axis, the runs ``(start, stop)`` of global indices it
  holds, in local order (:func:`local_bounds`): one run per axis from
  ``compute_local_shape_and_global_offset(shape, mesh, placements)`` (torch's
  own chunking rule, uneven shards included), and for an axis under a strided
  shard the indices torch itself gives a 1-D ``arange`` of that axis
  (``distribute_tensor(..., src_data_rank=None)``: a local split, no
  communication, ``O(axis)`` integers);
* every rectangle of the product of the runs is one
  :func:`eoi_core.sparse_orthogonal_shard` call, laid side by side in local
  order (the core's rows are independent, so each is the slice of the whole);
* a weight stored transposed (``transformers``' ``Conv1D``, ``(in, out)``)
  asks the core for the transposed part of the canonical
  ``(out, in // groups, *kernel)`` weight; every other layout (Linear, Conv,
  ConvTranspose, fused Q/K/V and RNN gates as ``groups`` along ``out``) is
  canonical already, so its torch part is the canonical one;
* the mask is a ``DTensor`` with the weight's mesh and placements
  (``DTensor.from_local``, no communication), so ``weight * mask`` is a local
  multiply.  Inside FSDP2's forward the weight is whole, or with tensor
  parallelism a DTensor on the TP sub-mesh (:func:`is_gathered`): the mask
  is gathered for that multiply only (:func:`gather`).

A ``Partial`` placement holds a summand of the weight, not a part of it: a
``ValueError``, never a guess.

Report numbers of a sharded weight are global: the mask count is the sum of
the local counts over the mesh dimensions that shard the weight (replicas are
counted once), and the orthogonality probe of :mod:`eoi_core.verify` is
computed with two all-reduces of probe-sized vectors (``(out + in) x P``
numbers per weight): ``z = H x`` is a sum of the ranks' ``H_r x_r`` products
and ``H^T z`` likewise, so no rank ever holds the whole weight.  Every rank of
the weight's mesh must therefore call :func:`eoi_torch.sparsify` together
(as every rank calls ``fully_shard``).

Examples
--------
The runs of a rank's rows, and the global indices they stand for:

>>> from eoi_torch.distributed import indices
>>> bounds = (((0, 2), (4, 6)), ((0, 3),))
>>> [axis.tolist() for axis in indices(bounds)]
[[0, 1, 4, 5], [0, 1, 2]]
"""

from __future__ import annotations

import itertools
from typing import Any, Callable

import numpy as np
import torch

import eoi_core
from eoi_core.verify import PROBES

__all__ = ["is_dtensor", "local_bounds", "indices", "take", "build_local", "as_dtensor", "global_sum",
           "probe_error", "conform", "is_gathered", "gather"]


def is_dtensor(tensor: Any) -> bool:
    """True for a ``torch.distributed.tensor.DTensor`` (a sharded or replicated parameter)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


Bounds = tuple[tuple[tuple[int, int], ...], ...]
"""Where a rank's local tensor lies in the global one: per axis, the runs ``(start, stop)`` of
consecutive global indices, in the local tensor's order (one run per axis for a rectangle)."""


def _strided_type() -> tuple[type, ...]:
    try:  # private in torch: the placement FSDP2 adds on top of tensor parallelism
        from torch.distributed.tensor.placement_types import _StridedShard
    except ImportError:  # pragma: no cover - torch without strided shards
        return ()
    return (_StridedShard,)


def _shards(placement: Any) -> bool:
    """``Shard(d)`` or a strided shard (which ``isinstance(_, Shard)`` does not match)."""
    from torch.distributed.tensor import Shard

    return isinstance(placement, (Shard, *_strided_type()))


def _runs(indices: list[int]) -> tuple[tuple[int, int], ...]:
    """``indices`` as runs ``(start, stop)`` of consecutive increasing integers, in order (an empty
    part is one empty run, as for a rectangle)."""
    runs: list[list[int]] = []
    for index in indices:
        if runs and runs[-1][1] == index:
            runs[-1][1] += 1
        else:
            runs.append([index, index + 1])
    return tuple((start, stop) for start, stop in runs) or ((0, 0),)


def _axis_indices(tensor: Any, axis: int) -> list[int]:
    """The global indices along ``axis`` that this rank holds, in local order, cut by torch itself.

    Only the placements that shard ``axis`` matter (every axis is cut on its own), so torch
    distributes a 1-D ``arange`` of the axis with those placements and every other mesh
    dimension replicated; ``src_data_rank=None`` makes that a local split, no communication.
    """
    from torch.distributed.tensor import Replicate, Shard, distribute_tensor

    strided = _strided_type()
    placements = []
    for placement in tensor.placements:
        if _shards(placement) and placement.dim == axis:
            placements.append(strided[0](0, split_factor=placement.split_factor)
                              if isinstance(placement, strided) else Shard(0))
        else:
            placements.append(Replicate())
    index = torch.arange(tensor.shape[axis], device=tensor.to_local().device)
    return distribute_tensor(index, tensor.device_mesh, placements, src_data_rank=None).to_local().tolist()


def local_bounds(tensor: Any, name: str = "tensor") -> Bounds:
    """This rank's part of the DTensor ``tensor``: per axis of the global shape, the runs ``(start, stop)``.

    ``Shard(d)`` and ``Replicate()`` placements give one run per axis (a
    rectangle, torch's ``compute_local_shape_and_global_offset``); the strided
    shards FSDP2 adds on top of tensor parallelism may give several runs along
    their axis, found with torch's own chunking (:func:`_axis_indices`).  The
    local tensor is the concatenation of the product of the runs, in order.
    Raises ``ValueError`` for placements that are not a part of the weight
    (``Partial``) and when torch's local tensor disagrees with the runs (a
    layout this module does not know).
    """
    from torch.distributed.tensor import Replicate
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset

    for placement in tensor.placements:
        if not (_shards(placement) or isinstance(placement, Replicate)):
            raise ValueError(
                f"{name} is a DTensor with placements {tuple(tensor.placements)}; EOI builds local shards "
                "for Shard(dim), Replicate() and FSDP2's strided shards only (a Partial placement holds "
                "a summand of the weight, not a part of it)"
            )
    shape, offset = compute_local_shape_and_global_offset(tuple(tensor.shape), tensor.device_mesh,
                                                          tensor.placements)
    bounds = [((start, start + size),) for start, size in zip(offset, shape)]
    for axis in sorted({p.dim for p in tensor.placements if isinstance(p, _strided_type())}):
        bounds[axis] = _runs(_axis_indices(tensor, axis))
    local = tensor.to_local()
    sizes = tuple(sum(stop - start for start, stop in runs) for runs in bounds)
    if tuple(local.shape) != sizes or sizes != tuple(shape):
        raise ValueError(
            f"{name}: the local tensor has shape {tuple(local.shape)} but placements "
            f"{tuple(tensor.placements)} of the global shape {tuple(tensor.shape)} give {sizes}"
        )
    return tuple(bounds)


def indices(bounds: Bounds) -> tuple[np.ndarray, ...]:
    """Per axis, the global indices of ``bounds`` (:func:`local_bounds`), in local order."""
    return tuple(np.concatenate([np.arange(start, stop) for start, stop in runs]) for runs in bounds)


def take(tensor: torch.Tensor, bounds: Bounds) -> torch.Tensor:
    """This rank's part ``bounds`` of the whole (plain) ``tensor``."""
    for axis, runs in enumerate(bounds):
        if len(runs) == 1:
            tensor = tensor.narrow(axis, runs[0][0], runs[0][1] - runs[0][0])
        else:
            index = torch.from_numpy(indices((runs,))[0]).to(tensor.device)
            tensor = tensor.index_select(axis, index)
    return tensor


def _canonical(bounds: Bounds, transposed: bool) -> Bounds:
    return (bounds[1], bounds[0]) + bounds[2:] if transposed else bounds


def build_local(
    shape: tuple[int, ...],
    bounds: Bounds,
    density: float,
    *,
    seed: int,
    dtype: Any,
    transposed: bool = False,
    gain: float = 1.0,
    groups: int = 1,
    center_density: float | str | None = None,
    build: Callable | None = None,
) -> tuple[np.ndarray, np.ndarray, Bounds]:
    """This rank's canonical ``(weight, mask)`` block of a weight and its canonical bounds.

    ``shape`` is the weight's global torch shape and ``bounds`` this rank's
    part of it (:func:`local_bounds`, checked before any seed is drawn);
    ``dtype`` is the core's dtype name.  With ``build=None`` every rectangle of
    the runs (one for ``Shard``/``Replicate`` placements) comes from
    :func:`eoi_core.sparse_orthogonal_shard` and they are laid side by side in
    local order; another scheme has no shard function, so its whole weight is
    built (in float64) and cut.  The block is in the canonical layout: transpose
    it back when ``transposed``.
    """
    shape = tuple(shape)
    canonical_shape = (shape[1], shape[0]) + shape[2:] if transposed else shape
    bounds = _canonical(tuple(bounds), transposed)
    if build is None:
        def piece(rectangle: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
            return eoi_core.sparse_orthogonal_shard(
                canonical_shape, density, rectangle, gain=gain, dtype=dtype, rng=seed, groups=groups,
                center_density=center_density,
            )

        if all(len(runs) == 1 for runs in bounds):  # a rectangle: one call
            values, mask = piece(tuple(runs[0] for runs in bounds))
            return values, mask, bounds
        # Strided shards: each rectangle of the runs alone (rows are independent in the core,
        # so every piece is the slice of the whole weight), placed at its local offsets.
        starts = [np.cumsum([0] + [stop - start for start, stop in runs]) for runs in bounds]
        values = mask = None
        for choice in itertools.product(*(range(len(runs)) for runs in bounds)):
            block, block_mask = piece(tuple(runs[i] for runs, i in zip(bounds, choice)))
            if values is None:
                local = tuple(int(axis[-1]) for axis in starts)
                values, mask = np.empty(local, dtype=block.dtype), np.empty(local, dtype=bool)
            region = tuple(slice(axis[i], axis[i + 1]) for axis, i in zip(starts, choice))
            values[region], mask[region] = block, block_mask
        return values, mask, bounds
    values, mask = build(canonical_shape, density, gain=gain, dtype=dtype, rng=seed, groups=groups,
                         center_density=center_density)
    values, mask = np.asarray(values), np.asarray(mask, dtype=bool)
    if values.shape != canonical_shape or mask.shape != canonical_shape:
        raise ValueError(f"the scheme returned shapes {values.shape} and {mask.shape}, expected {canonical_shape}")
    region = np.ix_(*indices(bounds))
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

    mesh = like.device_mesh
    for dim, placement in enumerate(like.placements):
        if _shards(placement):  # ranks along a Replicate dimension hold the same piece
            dist.all_reduce(values, op=dist.ReduceOp.SUM, group=mesh.get_group(dim))
    return values


def global_sum(value: int, like: Any) -> int:
    """The sum of this rank's ``value`` over the distinct pieces of the DTensor ``like`` (a collective)."""
    device = like.to_local().device
    total = torch.tensor([value], dtype=torch.int64, device=device)
    return int(_sum_over_shards(total, like).item())


def probe_error(values: np.ndarray, bounds: Bounds, shape: tuple[int, ...],
                gain: float, groups: int, like: Any, *, probes: int = PROBES, seed: int = 0) -> float:
    r""":func:`eoi_core.verify.probe_error` of a weight of which this rank holds one part (a collective).

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
    where = indices(bounds)
    rows, cols = where[0], where[1]
    centre = tuple((k - 1) // 2 for k in shape[2:])
    local = tuple(np.flatnonzero(axis == c) for c, axis in zip(centre, where[2:]))
    if all(len(position) for position in local):
        matrix = np.asarray(values[(slice(None), slice(None)) + tuple(int(p[0]) for p in local)], dtype=compute)
    else:  # this rank's piece of the kernel has no centre tap: it adds nothing to H x
        matrix = np.zeros((len(rows), len(cols)), dtype=compute)
    x = np.random.default_rng(seed).standard_normal((groups, inputs if tall else per_group, probes)).astype(compute)
    # Per group block: this rank's local rows in it and their rows inside the block.
    blocks = [(block, np.flatnonzero(rows // per_group == block)) for block in np.unique(rows // per_group)]
    blocks = [(int(block), local_rows, rows[local_rows] - block * per_group) for block, local_rows in blocks]

    device = like.to_local().device

    def reduce(array: np.ndarray) -> np.ndarray:
        return _sum_over_shards(torch.from_numpy(array).to(device), like).cpu().numpy()

    first = np.zeros((groups, per_group, probes) if tall else (groups, inputs, probes), dtype=compute)
    for block, local_rows, block_rows in blocks:  # the indices are distinct, so += adds each once
        if tall:  # z_b = H_b x_b: this rank's rows of it, from its columns of x
            first[block, block_rows] += matrix[local_rows] @ x[block, cols]
        else:  # z_b = H_b^T x_b: this rank's columns of it, from its rows of x
            first[block, cols] += matrix[local_rows].T @ x[block, block_rows]
    first = reduce(first)
    second = np.zeros(x.shape, dtype=compute)
    for block, local_rows, block_rows in blocks:
        if tall:
            second[block, cols] += matrix[local_rows].T @ first[block, block_rows]
        else:
            second[block, block_rows] += matrix[local_rows] @ first[block, cols]
    second = reduce(second)
    return float((np.abs(second / (gain * gain) - x).max(axis=1) / np.abs(x).max(axis=1)).max())


def conform(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``mask`` laid out like ``like``.

    This rank's part of a whole mask for a DTensor ``like``; a DTensor mask
    redistributed to ``like``'s placements on the same mesh, or gathered and cut
    (:func:`gather`) for a plain ``like`` or one on another mesh; else unchanged.
    """
    if is_dtensor(mask) and (not is_dtensor(like) or like.device_mesh != mask.device_mesh):
        return gather(mask, like)
    if is_dtensor(like):
        if not is_dtensor(mask):  # a mask registered before fully_shard: every rank holds all of it
            return as_dtensor(take(mask, local_bounds(like)), like)
        if tuple(mask.placements) != tuple(like.placements):
            return mask.redistribute(like.device_mesh, like.placements)
    return mask


def is_gathered(tensor: torch.Tensor, mask: Any) -> bool:
    """True when ``tensor`` is FSDP2's unsharded weight of the sharded ``mask``'s parameter.

    Inside FSDP2's forward the weight is whole (a plain tensor) or, with tensor
    parallelism, a DTensor on the TP sub-mesh only, while the mask lives on
    the whole mesh like the sharded parameter.
    """
    return is_dtensor(mask) and (not is_dtensor(tensor) or tensor.device_mesh != mask.device_mesh)


def gather(mask: Any, like: torch.Tensor) -> torch.Tensor:
    """The DTensor ``mask`` as ``like`` holds it (a collective).

    Whole for a plain ``like`` (FSDP2's unsharded weight).  For a DTensor
    ``like`` on a named sub-mesh of the mask's mesh (FSDP2's unsharded weight
    under tensor parallelism: the ``tp`` sub-mesh of ``(dp, tp)``), the mask is
    gathered along the other mesh dimensions only (``Replicate()`` there,
    ``like``'s placements on the sub-mesh), so each rank receives its TP piece,
    not the whole mask; on any other mesh it is gathered whole and cut to
    ``like``'s part.
    """
    from torch.distributed.tensor import Replicate

    if not is_dtensor(like):
        return mask.full_tensor()
    mesh, names, sub = mask.device_mesh, mask.device_mesh.mesh_dim_names, like.device_mesh.mesh_dim_names
    if names and sub and set(sub) <= set(names) and like.device_mesh == mesh[sub]:
        placements = [like.placements[sub.index(name)] if name in sub else Replicate() for name in names]
        local = mask.redistribute(mesh, placements).to_local()
        if tuple(local.shape) == tuple(like.to_local().shape):
            return as_dtensor(local, like)
    return as_dtensor(take(mask.full_tensor(), local_bounds(like)), like)


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
