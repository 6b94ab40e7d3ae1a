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
sparsify          EOI for every Linear / Conv / ConvTranspose of a model, masks kept in training
masks             the mask of every sparsified layer, by name
make_permanent    bake the masks into the weights and drop the parametrizations
prepare_for_load  give a fresh model the parametrizations a saved state_dict needs
EOIMask           the parametrization ``weight = original * mask``
SparsifyReport    what ``sparsify`` returns: per-layer rows, printable as a table
pai               SNIP / GraSP / SynFlow densities (``distribution=``) and their own masks (Base)
"""

from . import pai
from .init import SUPPORTED_DTYPES, eoi_
from .mask import EOIMask, make_permanent, masks, prepare_for_load
from .report import LayerReport, SparsifyReport
from .select import SUPPORTED_LAYERS
from .sparsify import sparsify

__all__ = [
    "EOIMask",
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

__version__ = "0.1.0"
