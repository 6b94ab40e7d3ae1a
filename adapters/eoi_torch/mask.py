"""Masks kept by torch's own parametrization machinery.

:func:`sparsify` registers an :class:`EOIMask` on each layer's ``weight`` with
:func:`torch.nn.utils.parametrize.register_parametrization`.  The trainable
parameter becomes ``layer.parametrizations.weight.original`` (the same
``Parameter`` object, so an optimizer built before still holds it) and
``layer.weight`` is computed as ``original * mask`` on every access: one
element-wise multiply per forward, and the effective weight is exactly zero off
the mask whatever the optimizer does to ``original``.  The mask is a buffer,
so it lives in ``state_dict`` (key ``<layer>.parametrizations.weight.0.mask``),
moves with ``model.to(...)`` and survives ``copy.deepcopy``.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

__all__ = ["EOIMask", "masks", "make_permanent", "prepare_for_load"]

# State-dict key of the mask :func:`sparsify` registers: "<layer.>parametrizations.<tensor>.0.mask".
_MASK_KEY = re.compile(r"^(?P<layer>(?:.*\.)?)parametrizations\.(?P<tensor>[^.]+)\.0\.mask$")


class EOIMask(nn.Module):
    """Parametrization ``weight = original * mask`` with a fixed boolean ``mask``.

    Parameters
    ----------
    mask : torch.Tensor of bool
        The trainable entries, the shape of the weight it masks.
    """

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool:
            raise TypeError(f"mask must be a bool torch.Tensor, got {mask!r:.80}")
        self.register_buffer("mask", mask)

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        # The multiply also masks the gradient, so `original` gets zero gradient off the mask.
        return original * self.mask

    def extra_repr(self) -> str:
        return f"shape={tuple(self.mask.shape)}, trainable={int(self.mask.sum())}"

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        # Assigning `layer.weight = w` stores `w * mask`, so `original` stays zero off the mask too.
        return weight * self.mask


def _eoi_masks(module: nn.Module, tensor: str = "weight") -> list[EOIMask]:
    if not parametrize.is_parametrized(module, tensor):
        return []
    return [p for p in module.parametrizations[tensor] if isinstance(p, EOIMask)]


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The EOI mask of every sparsified layer, by qualified layer name.

    Examples
    --------
    >>> import torch, eoi_torch
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> _ = eoi_torch.sparsify(model, 0.5, distribution="uniform")
    >>> sorted(eoi_torch.masks(model))
    ['0', '2']
    """
    found = {}
    for name, module in model.named_modules():
        for parametrization in _eoi_masks(module):
            found[name] = parametrization.mask
    return found


def make_permanent(model: nn.Module) -> nn.Module:
    """Bake every EOI mask into its weight and drop the parametrization, in place.

    Each sparsified layer's ``weight`` becomes a plain ``Parameter`` holding
    ``original * mask`` (so the zeros stay), via
    ``torch.nn.utils.parametrize.remove_parametrizations(layer, "weight")``.
    Training afterwards no longer keeps the zeros; the ``state_dict`` has plain
    ``<layer>.weight`` keys again and loads into an unsparsified model.

    Returns
    -------
    model : the same module, for chaining.
    """
    for _, module in model.named_modules():
        if _eoi_masks(module):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return model


def prepare_for_load(model: nn.Module, state_dict: Mapping[str, Any]) -> nn.Module:
    """Give a freshly built ``model`` the EOI parametrizations that ``state_dict`` was saved with.

    A sparsified layer saves ``<layer>.parametrizations.weight.original`` and
    ``<layer>.parametrizations.weight.0.mask`` instead of ``<layer>.weight``;
    ``model.load_state_dict`` needs the same structure.  For every such mask in
    ``state_dict`` whose layer exists in ``model`` and is not parametrized yet,
    this registers an :class:`EOIMask` (with that mask, on the layer's device);
    ``load_state_dict`` then fills in the values.  Keys it cannot place are
    left for ``load_state_dict`` to report.

    Returns
    -------
    model : the same module, for chaining.

    Examples
    --------
    >>> import io, torch, eoi_torch
    >>> def build():
    ...     return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> model = build()
    >>> _ = eoi_torch.sparsify(model, 0.5)
    >>> buffer = io.BytesIO(); torch.save(model.state_dict(), buffer); _ = buffer.seek(0)
    >>> state = torch.load(buffer)
    >>> fresh = eoi_torch.prepare_for_load(build(), state)
    >>> fresh.load_state_dict(state)
    <All keys matched successfully>
    """
    layers = dict(model.named_modules())
    for key, value in state_dict.items():
        match = _MASK_KEY.match(key)
        if match is None:
            continue
        module = layers.get(match["layer"].rstrip("."))
        tensor = match["tensor"]
        if module is None or parametrize.is_parametrized(module, tensor):
            continue
        current = getattr(module, tensor, None)
        if not isinstance(current, torch.Tensor) or not isinstance(value, torch.Tensor):
            continue
        if value.shape != current.shape or value.dtype != torch.bool:
            raise ValueError(
                f"state_dict[{key!r}] is a {value.dtype} mask of shape {tuple(value.shape)}, but "
                f"layer {match['layer'].rstrip('.')!r} has {tensor} of shape {tuple(current.shape)}; "
                "a mask must be bool with the weight's shape"
            )
        parametrize.register_parametrization(module, tensor, EOIMask(value.to(current.device, copy=True)))
    return model
