"""eoi_core: Exact Orthogonal Initialization of sparse neural networks.

Framework-neutral core (NumPy in, NumPy out, PyTorch's canonical layout).

>>> import eoi_core
>>> weight, mask = eoi_core.sparse_orthogonal((64, 32, 3, 3), density=0.1, rng=0)

Public API
----------
sparse_orthogonal      the (weight, mask) of EOI for any shape and density
validate               raise what sparse_orthogonal would, building nothing
sparse_orthogonal_shard  any rectangle of that (weight, mask), built alone, bit-identical
shard_bounds           the default split of an axis among ranks; free_axis: the cheap axis to split
set_num_threads        threads of the Numba engine (also EOI_NUM_THREADS); get_num_threads
givens_compose         exactly ``t`` random Givens rotations (for the density law)
expected_density       the exact Markov-chain law of the density after ``t`` rotations
rotations_for_density  the smallest ``t`` whose expected density reaches a target
min_density            the orthogonal floor of a shape
orthogonality_error    max deviation of a weight from exact (semi-)orthogonality
distributions          per-layer densities for a whole model (uniform, ER, ERK, from PaI scores)
schemes                EOI, SAO, AI and random sparse Kaiming behind one signature (registry, get)
sao                    Sparsity-Aware Orthogonal init and the densities it can build
layout                 canonical <-> channels-last layouts, the mask rounding rule
kernels                channels-last kernel layouts (dense, conv, depthwise, gates, einsum)
report                 LayerReport / SparsifyReport, what every adapter's sparsify returns
selection              include/exclude layer selection by name, shared by the adapters
checks                 argument checks every entry point and adapter uses
"""

from . import distributions, kernels, layout, report, sao, schemes, selection
from .api import givens_compose, orthogonality_error, sparse_orthogonal, validate
from .checks import ENGINES
from .layout import mask_count, min_density
from .report import LayerReport, SparsifyReport
from .shard import free_axis, shard_bounds, sparse_orthogonal_shard
from .threads import get_num_threads, set_num_threads
from .theory import expected_density, rotations_for_density

__all__ = [
    "ENGINES",
    "distributions",
    "expected_density",
    "free_axis",
    "get_num_threads",
    "givens_compose",
    "kernels",
    "LayerReport",
    "SparsifyReport",
    "report",
    "sao",
    "schemes",
    "selection",
    "set_num_threads",
    "shard_bounds",
    "layout",
    "mask_count",
    "min_density",
    "orthogonality_error",
    "rotations_for_density",
    "sparse_orthogonal",
    "sparse_orthogonal_shard",
    "validate",
]

from ._version import __version__  # noqa: E402  (the one place the version is written)
