"""eoi_torch: Exact Orthogonal Initialization (EOI) for PyTorch.

A thin adapter over :mod:`eoi_core`: it translates layout, dtype, device and
RNG, and keeps masks with ``torch.nn.utils.parametrize``.

>>> import torch, eoi_torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
>>> report = eoi_torch.sparsify(model, density=0.2)   # ERK over layers
>>> print(report)  # doctest: +SKIP

Public API
----------
eoi_              fill one tensor in place (``torch.nn.init`` style), return its mask
sparsify          EOI for every weight matrix of a model (Linear, Conv, attention, RNN, transformers'
                  Conv1D), masks kept in training; a report row for every weight matrix
masks             the mask of every sparsified layer, by name
make_permanent    bake the masks into the weights and drop the parametrizations
prepare_for_load  give a fresh model the parametrizations a saved state_dict needs
EOIMask           the parametrization ``weight = original * mask``
keep_masks        re-zero hook-mode weights after every step of an optimizer
SparsifyReport    what ``sparsify`` returns (:class:`eoi_core.report.SparsifyReport`)
pai               SNIP / GraSP / SynFlow densities (``distribution=``) and their own masks (Base)

``eoi_`` and ``sparsify`` also take ``DTensor`` parameters (FSDP2's ``fully_shard``,
``Shard`` / ``Replicate`` placements): each rank builds only its own shard, bit-identical
to the single-process weight (:mod:`eoi_torch.distributed`).
"""

from . import pai
from .init import SUPPORTED_DTYPES, eoi_
from .mask import MODES, EOIMask, keep_masks, make_permanent, masks, prepare_for_load
from .report import LayerReport, SparsifyReport
from .discover import SUPPORTED_LAYERS
from .sparsify import TIED, sparsify

__all__ = [
    "EOIMask",
    "MODES",
    "TIED",
    "keep_masks",
    "LayerReport",
    "SUPPORTED_DTYPES",
    "SUPPORTED_LAYERS",
    "SparsifyReport",
    "eoi_",
    "make_permanent",
    "masks",
    "pai",
    "prepare_for_load",
    "sparsify",
]

from eoi_core._version import __version__  # noqa: E402  (one version for the whole distribution)
